"""The training loop is method-agnostic: a toy classification method trains, checkpoints
and resumes through the same loop as the SCN, and the loop imports nothing of the SCN."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from pipeline.config import ConfigError
from pipeline.io import atomic_path
from pipeline.train.checkpoint import load_checkpoint, resume_key
from pipeline.train.config import TrainConfig
from pipeline.train.distributed import DistInfo, all_reduce
from pipeline.train.loop import FitResult, fit, history_fields
from pipeline.train.methods.base import BatchLoss, Method, autocast
from tests.helpers.toy_train import toy_config

pytestmark = pytest.mark.usefixtures("one_thread")
N_CLASSES, DIM = 4, 6


class Blobs(Dataset):
    """Points around one of four class centres; ``ds[[k1, k2, ...]]`` is a batch with
    ``points`` (B, DIM) and ``label`` (B,) (no ``x``, ``offset`` or ``target``)."""

    def __init__(self, n: int, seed: int):
        centres = torch.randn(N_CLASSES, DIM, generator=torch.Generator().manual_seed(7)) * 3
        g = torch.Generator().manual_seed(seed)
        self.label = torch.randint(0, N_CLASSES, (n,), generator=g)  # (n,)
        self.points = centres[self.label] + torch.randn(n, DIM, generator=g)  # (n, DIM)

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(np.atleast_1d(np.asarray(index, dtype=np.int64)))  # (B,)
        return {"points": self.points[idx], "label": self.label[idx]}


class ToyClassifier(Method):
    """A second method: cross-entropy of a small MLP over the class of each point."""

    name: ClassVar[str] = "toy"
    record_keys: ClassVar[tuple[str, ...]] = ("test_loss", "test_accuracy")

    def __init__(self, train_set: Blobs, test_set: Blobs, seed: int = 0):
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(DIM, 16), nn.ReLU(), nn.Linear(16, N_CLASSES))
        self.train_set, self.test_set = train_set, test_set
        self.epochs_started: list[int] = []

    @property
    def reduction(self) -> Literal["sum", "mean"]:
        return "mean"

    def param_groups(self, cfg: TrainConfig) -> list[dict[str, Any]]:
        return [{"params": list(self.model.parameters()), "lr": cfg.lr}]

    def on_epoch_start(self, epoch: int) -> None:
        self.epochs_started.append(epoch)

    def forward(self, net: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return net(batch["points"])  # (B, N_CLASSES) logits

    def loss(self, out: torch.Tensor, batch: dict[str, Any]) -> BatchLoss:
        loss = F.cross_entropy(out.float(), batch["label"])  # scalar, mean over the batch
        n = len(batch["label"])
        return BatchLoss(loss, loss.detach() * n, n)

    @torch.no_grad()
    def evaluate(self, device: torch.device, info: DistInfo, amp: bool) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        rows = np.arange(info.rank, len(self.test_set), info.world_size)
        batch = self.to_device(self.test_set[rows], device)
        with autocast(device, amp):
            logits = self.model(batch["points"]).float()  # (B, N_CLASSES)
        sums = torch.stack([
            F.cross_entropy(logits, batch["label"], reduction="sum").double(),
            (logits.argmax(1) == batch["label"]).sum().double(),
            torch.tensor(len(rows), dtype=torch.float64, device=device),
        ])  # fmt: skip
        all_reduce(info, sums)
        self.model.train(was_training)
        return {"test_loss": float(sums[0] / sums[2]), "test_accuracy": float(sums[1] / sums[2])}

    def save_trained(self, path: Path, config: dict[str, Any], history: list[dict]) -> None:
        with atomic_path(path) as tmp:
            torch.save({"model": self.model.state_dict(), "history": history}, tmp)

    def metrics(self, result: FitResult) -> dict[str, Any]:
        return {"test_accuracy": result.history[-1]["test_accuracy"]}


def _blobs() -> tuple[Blobs, Blobs]:
    return Blobs(96, seed=0), Blobs(32, seed=1)


def test_a_classification_method_trains_through_the_shared_loop(tmp_path):
    train, test = _blobs()
    method = ToyClassifier(train, test)
    cfg = toy_config(epochs=5, lr=0.1, lr_step_epoch=4)
    result = fit(method, cfg, checkpoint=tmp_path / "toy.pt")
    assert result.model is method.model
    assert method.epochs_started == [0, 1, 2, 3, 4]
    assert [list(r) for r in result.history] == [history_fields(method)] * 5
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]
    assert result.history[-1]["test_accuracy"] > 0.9
    assert result.history[-1]["lr"] == pytest.approx(0.1 * cfg.lr_gamma)  # stepped after 4
    ckpt = load_checkpoint(tmp_path / "toy.pt", resume_key(cfg, {}), cfg.epochs)
    assert ckpt["epoch"] == 5 and set(ckpt["model"]) == set(method.model.state_dict())
    method.save_trained(tmp_path / "model.pt", {}, result.history)
    assert method.metrics(result)["test_accuracy"] > 0.9


def test_a_second_method_resumes_to_the_same_weights_and_checkpoint_bytes(tmp_path):
    train, test = _blobs()
    cfg = toy_config(epochs=4, lr=0.1, lr_step_epoch=3)
    (tmp_path / "full").mkdir()
    (tmp_path / "resumed").mkdir()
    # torch.save names its zip records after the file: the same name in two folders
    full = fit(ToyClassifier(train, test), cfg, checkpoint=tmp_path / "full" / "ckpt.pt")

    class Interrupted(Exception):
        pass

    def crash(epoch, record):
        if epoch == 2:
            raise Interrupted

    ckpt = tmp_path / "resumed" / "ckpt.pt"
    with pytest.raises(Interrupted):
        fit(ToyClassifier(train, test), cfg, checkpoint=ckpt, on_epoch_end=crash)
    torch.manual_seed(999)  # other RNG draws in between must not matter
    method = ToyClassifier(train, test, seed=5)
    resumed = fit(method, cfg, checkpoint=ckpt)
    assert resumed.resumed_epoch == 2 and method.epochs_started == [2, 3]
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    for key, value in full_state.items():
        assert torch.equal(value, resumed_state[key]), key
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]
    assert ckpt.read_bytes() == (tmp_path / "full" / "ckpt.pt").read_bytes()


class FirstLayerWarmup(ToyClassifier):
    """The toy method with a warm-up: its first layer waits while the last one learns."""

    def warmup_frozen(self) -> list[tuple[str, nn.Parameter]]:
        return list(self.model[0].named_parameters())


def test_a_second_method_gets_the_warmup_and_selection_on_its_own_score():
    """The frozen warm-up and model selection come from the loop: any method naming its
    warm-up parameters, scored by its select_key (here the default, test_loss, lowest)."""
    train, test = _blobs()
    method = FirstLayerWarmup(train, test)
    start = {k: v.clone() for k, v in method.model.state_dict().items()}
    states = {}

    def snapshot(epoch, record):
        states[epoch] = {k: v.clone() for k, v in method.model.state_dict().items()}

    cfg = toy_config(epochs=4, lr=0.1, lr_step_epoch=4, context_warmup_epochs=2, select="best")
    result = fit(method, cfg, on_epoch_end=snapshot)
    for epoch in (1, 2):
        assert all(torch.equal(states[epoch][k], start[k]) for k in ("0.weight", "0.bias"))
        assert not torch.equal(states[epoch]["2.weight"], start["2.weight"])
    assert not torch.equal(states[3]["0.weight"], start["0.weight"])
    losses = [r["test_loss"] for r in result.history]
    assert result.best_epoch == int(np.argmin(losses)) + 1 == result.selected_epoch
    for key, value in states[result.best_epoch].items():
        assert torch.equal(result.model.state_dict()[key], value)


def test_a_warmup_is_refused_for_a_method_that_names_nothing_to_freeze():
    train, test = _blobs()
    with pytest.raises(ConfigError, match=r"train.context_warmup_epochs: 1, but the toy method "
                       r"names no parameters to freeze.*allowed: 0"):  # fmt: skip
        fit(ToyClassifier(train, test), toy_config(epochs=2, context_warmup_epochs=1))


def test_the_loop_imports_nothing_of_the_scn():
    """The loop, checkpoints, DDP helpers and the method base stand without the SCN."""
    code = (
        "import sys\n"
        "import pipeline.train.loop, pipeline.train.checkpoint, pipeline.train.distributed\n"
        "import pipeline.train.methods.base\n"
        "scn = ('pipeline.train.methods.scn', 'pipeline.train.model', 'pipeline.train.data',"
        " 'pipeline.models.context')\n"
        "print(sorted(m for m in scn if m in sys.modules))\n"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
