"""Training the SCN on the synthetic pairs: the main pipeline's model on cached trunks.

The bottom stream is the backbone's trainable head (``Backbone.split(scope)``) on top of
the frozen trunk, whose output is computed once per patch; the spatial context module
and the loss are :mod:`pipeline.models.context`'s. The head stays in eval mode (frozen
batch-norm statistics, no dropout / drop-connect) while its weights train, so a run is
deterministic for its seed.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline.backbones.preprocess import normalize
from pipeline.models.context import ContextModule, scn_loss

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings of one run (from ``SyntheticConfig``)."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    hidden: int = 256
    seed: int = 0


@dataclass
class RunResult:
    """Per-epoch errors of one run and the decoded probe outputs at chosen epochs."""

    name: str
    train_mse: list[float] = field(default_factory=list)  # per epoch, running over batches
    test_mse: list[float] = field(default_factory=list)  # per epoch, after the epoch
    test_mse_per_pair: np.ndarray | None = None  # (N_test,) after the last epoch
    probes: dict[int, np.ndarray] = field(default_factory=dict)  # epoch -> (K, D) h3


def unique_rows(x: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first index of each distinct row, inverse (N,) mapping each row to its distinct one).

    The synthetic patches repeat exactly (a shape of a given side always renders the same
    crop), so each distinct patch is pushed through a network once.
    """
    arr = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    _, first, inverse = np.unique(
        arr.reshape(len(arr), -1), axis=0, return_index=True, return_inverse=True
    )
    return first, inverse.reshape(-1)


@torch.no_grad()
def encode(
    module: nn.Module,
    images: np.ndarray,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int = 64,
) -> torch.Tensor:
    """(N, S, S, 3) uint8 patches -> ``module`` output on normalised (N, 3, S, S) input.

    Each distinct patch is encoded once (eval mode: outputs do not depend on the batch).
    """
    module.eval()
    first, inverse = unique_rows(images)
    distinct = images[first]  # (U, S, S, 3)
    outs = []
    for start in range(0, len(distinct), batch_size):
        x = torch.from_numpy(distinct[start : start + batch_size]).permute(
            0, 3, 1, 2
        )  # (B, 3, S, S)
        x = normalize(x.float().div_(255.0), mean, std)  # (B, 3, S, S)
        outs.append(module(x))  # (B, ...)
    log.debug("encoded %d distinct of %d patches", len(distinct), len(images))
    return torch.cat(outs)[torch.from_numpy(inverse)]  # (N, ...)


class DedupHead(nn.Module):
    """Runs ``head`` once per distinct input row of a batch, then scatters the outputs.

    Exactly ``head(x)`` for a head in eval mode (no batch statistics); gradients of
    repeated rows add up as they would per row. ``ids`` (N,) label the distinct rows.
    """

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        _, first, inv = _batch_unique(ids)
        return self.head(x[first])[inv]  # (B, D)


def _batch_unique(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    u, inv = torch.unique(ids, return_inverse=True)  # (U,), (B,)
    first = torch.empty(len(u), dtype=torch.long)
    first[inv] = torch.arange(len(ids))  # (U,) one position of each id (rows are equal)
    return u, first, inv


def pixel_targets(pixels: np.ndarray) -> torch.Tensor:
    """(N, P, P, 3) uint8 -> (N, 3 * P * P) float in [0, 1] (channel-first flattening)."""
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, P, P)
    return x.flatten(1)  # (N, 3*P*P)


def decode_pixels(h3: np.ndarray, size: int) -> np.ndarray:
    """(K, 3 * P * P) predicted pixel targets -> (K, P, P, 3) float images clipped to [0, 1]."""
    return np.clip(h3.reshape(-1, 3, size, size).transpose(0, 2, 3, 1), 0.0, 1.0)


@torch.no_grad()
def per_pair_error(
    head: DedupHead, ctx: ContextModule, trunk: torch.Tensor, offset: torch.Tensor,
    target: torch.Tensor, ids: torch.Tensor, batch_size: int = 256,
) -> torch.Tensor:  # fmt: skip
    """||target - h3||^2 per pair: (N,)."""
    errs = []
    for s in range(0, len(trunk), batch_size):
        b = slice(s, s + batch_size)
        h3 = ctx(head(trunk[b], ids[b]), offset[b])  # (B, D)
        errs.append((target[b] - h3).pow(2).sum(dim=1))  # (B,)
    return torch.cat(errs)  # (N,)


def train_scn(
    name: str,
    head: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    settings: TrainSettings,
    use_offset: bool = True,
    probe: tuple[torch.Tensor, torch.Tensor] | None = None,
    probe_epochs: tuple[int, ...] = (),
) -> RunResult:
    """Train a fresh copy of ``head`` and a new context module; return the error curves.

    ``train`` and ``test``: (cached trunk output (N, ...), offsets (N, 8), targets (N, D)).
    The objective is :func:`scn_loss` averaged over the pairs of a batch (the paper's sum
    divided by the batch size); the reported MSE is the same quantity over a whole split.
    ``probe``: (trunk (K, ...), offsets (K, 8)) whose h3 is recorded after ``probe_epochs``.
    """
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    head = copy.deepcopy(head).eval()  # same start for every run; eval: frozen BN stats
    head.requires_grad_(True)
    dhead = DedupHead(head)
    trunk, offset, target = train
    ids = torch.from_numpy(unique_rows(trunk)[1])  # (N,) distinct-input labels
    test_ids = torch.from_numpy(unique_rows(test[0])[1])  # (N_test,)
    with torch.no_grad():
        in_dim = head(trunk[:1]).shape[1]  # D of h1
    ctx = ContextModule(in_dim, target.shape[1], hidden=settings.hidden, use_offset=use_offset)
    params = [*head.parameters(), *ctx.parameters()]
    if settings.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(
            params, lr=settings.lr, weight_decay=settings.weight_decay
        )
    else:
        opt = torch.optim.SGD(
            params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
        )
    result = RunResult(name)
    n = len(trunk)
    for epoch in tqdm(range(1, settings.epochs + 1), desc=name, leave=False):
        ctx.train()
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(settings.batch_size):
            h1 = dhead(trunk[idx], ids[idx])  # (B, D_in) = head(trunk[idx])
            h3 = ctx(h1, offset[idx])  # (B, D)
            loss = scn_loss(h3, target[idx], reduction="mean")  # scalar
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if not np.isfinite(total):
            raise FloatingPointError(
                f"synthetic run {name}: the loss diverged at epoch {epoch}; lower the learning rate"
            )
        ctx.eval()
        test_err = per_pair_error(dhead, ctx, *test, test_ids)  # (N_test,)
        result.train_mse.append(total / n)
        result.test_mse.append(float(test_err.mean()))
        if probe is not None and epoch in probe_epochs:
            with torch.no_grad():
                result.probes[epoch] = ctx(head(probe[0]), probe[1]).numpy()  # (K, D)
        log.debug("%s epoch %d: train %.4f test %.4f", name, epoch, total / n, result.test_mse[-1])
    result.test_mse_per_pair = test_err.numpy()
    log.info(
        "%s: test MSE %.4f after %d epochs (epoch 1: %.4f)",
        name, result.test_mse[-1], settings.epochs, result.test_mse[0],
    )  # fmt: skip
    return result
