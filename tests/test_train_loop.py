"""The training loop: the loss falls, the offset matters, resume and DDP reproduce."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.train.checkpoint import load_checkpoint, resume_key
from pipeline.train.methods.scn import fit
from tests.helpers.toy_train import open_toy_sets, toy_config, toy_model, toy_sets

pytestmark = pytest.mark.usefixtures("one_thread")


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_few_steps_lower_the_loss(tmp_path):
    train, test = toy_sets(tmp_path)
    model = toy_model()
    before = fit(model, train, test, toy_config(epochs=1, lr=1e-12)).history[0]["test_loss"]
    result = fit(toy_model(), train, test, toy_config(epochs=3))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.history[-1]["test_loss"] < 0.7 * before
    assert np.isfinite(result.pairs_per_s) and result.pairs_per_s > 0


@pytest.mark.parametrize("loss", ["sum", "mean"])
def test_offset_solves_what_the_ablation_cannot(tmp_path, loss):
    """Targets depend only on the direction of the top patch: the offset is needed."""
    train, test = toy_sets(tmp_path)
    lr = 0.05 if loss == "mean" else 0.05 / 16  # sum over a batch of 16: same step size
    final = {}
    for use_offset in (True, False):
        cfg = toy_config(epochs=25, lr_step_epoch=20, lr=lr, loss=loss, use_offset=use_offset)
        result = fit(toy_model(use_offset=use_offset), train, test, cfg)
        final[use_offset] = result.history[-1]
    # without offsets the best constant prediction leaves the targets' variance (~7.5)
    assert final[False]["test_loss"] > 5.0
    assert final[True]["test_loss"] < 0.5
    assert final[True]["train_loss"] < 0.05 * final[False]["train_loss"]


def test_resume_continues_to_the_same_weights(tmp_path):
    train, test = toy_sets(tmp_path)
    cfg = toy_config(epochs=5, lr_step_epoch=3)
    full = fit(toy_model(), train, test, cfg, checkpoint=tmp_path / "a.pt")

    class Interrupted(Exception):
        pass

    def crash(epoch, record):
        if epoch == 2:
            raise Interrupted

    ckpt = tmp_path / "b.pt"
    with pytest.raises(Interrupted):
        fit(toy_model(), train, test, cfg, checkpoint=ckpt, on_epoch_end=crash)
    assert load_checkpoint(ckpt, resume_key(cfg, {}), cfg.epochs)["epoch"] == 2
    # a fresh process state: other RNG draws in between must not matter
    torch.manual_seed(999)
    np.random.seed(999)  # noqa: NPY002 - perturb the global RNG on purpose
    resumed = fit(toy_model(seed=7), train, test, cfg, checkpoint=ckpt)
    assert resumed.resumed_epoch == 2
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4, 5]
    for key, value in _state(full.model).items():
        assert torch.equal(value, _state(resumed.model)[key]), key
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]


def test_checkpoint_of_another_config_is_not_resumed(tmp_path):
    train, test = toy_sets(tmp_path, n_train=4, n_test=2)
    ckpt = tmp_path / "c.pt"
    fit(toy_model(), train, test, toy_config(epochs=1), checkpoint=ckpt)
    other = toy_config(epochs=2, lr=0.01)
    assert load_checkpoint(ckpt, resume_key(other, {}), 2) is None
    assert load_checkpoint(ckpt, resume_key(toy_config(), {"targets_sha256": "x"}), 2) is None
    assert load_checkpoint(ckpt, resume_key(toy_config(epochs=3), {}), 3)["epoch"] == 1
    result = fit(toy_model(), train, test, other, checkpoint=ckpt)
    assert result.resumed_epoch == 0 and len(result.history) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    from pathlib import Path

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    torch.set_num_threads(1)
    try:
        train, test = open_toy_sets(Path(root))
        results = {}
        for loss in ("sum", "mean"):
            cfg = toy_config(epochs=3, loss=loss, lr=0.05 if loss == "mean" else 0.05 / 16)
            result = fit(toy_model(), train, test, cfg, checkpoint=Path(root) / f"ddp-{loss}.pt")
            results[loss] = {"state": _state(result.model), "history": result.history}
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one(tmp_path):
    """2 gloo processes with half the batch each follow the single-process trajectory
    (summed loss: DDP's gradient average is scaled back to the global sum)."""
    train, test = toy_sets(tmp_path)  # written once, read by every process
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), str(out)), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=False)
    for loss in ("sum", "mean"):
        cfg = toy_config(epochs=3, loss=loss, lr=0.05 if loss == "mean" else 0.05 / 16)
        single = fit(toy_model(), train, test, cfg)
        moved = 0.0
        for key, value in _state(single.model).items():
            assert torch.allclose(value, ddp[loss]["state"][key], rtol=1e-4, atol=1e-5), key
            moved += float((value - _state(toy_model())[key]).abs().sum())
        assert moved > 1.0  # the weights did train
        for a, b in zip(single.history, ddp[loss]["history"], strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
            assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-4)
        assert (tmp_path / f"ddp-{loss}.pt").is_file()  # rank 0 wrote the checkpoint
