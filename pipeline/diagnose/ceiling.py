"""The supervised ceiling: the SCN-trainable head fine-tuned with object labels.

Same trainable layers (``network.scope``), same ImageNet initialisation as SCN's bottom
stream; a linear classifier on h1 is added and both are trained with cross-entropy on the
train split's non-difficult objects (Adam, ``diagnose.ceiling_*``). The head runs in eval
mode throughout (BatchNorm keeps its ImageNet statistics, no dropout or drop-connect),
as the SCN default (``train.bn: frozen``, ``train.dropout: false``). A seeded share of
the objects is held out: after each epoch the held-out cross-entropy is measured, the
best epoch's head is kept, and training stops after ``patience`` epochs without a
better one. The Obj SVM protocol on the kept head's h1 then gives the ceiling.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

log = logging.getLogger(__name__)


@dataclass
class CeilingResult:
    head: nn.Module  # the kept (best held-out loss) head, eval mode, frozen
    best_epoch: int  # 0: the original head was never beaten
    epochs_run: int
    history: list[dict] = field(default_factory=list)  # epoch, train_loss, holdout_loss, ...

    def to_dict(self) -> dict:
        return {
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "history": self.history,
        }


def _batches(n: int, batch_size: int, rng: np.random.Generator | None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for s in range(0, n, batch_size):
        yield order[s : s + batch_size]


@torch.no_grad()
def _evaluate(
    head: nn.Module, clf: nn.Linear, x: np.ndarray, y: np.ndarray, bs: int, device
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over (x, y)."""
    total, correct = 0.0, 0
    for idx in _batches(len(x), bs, None):
        xb = torch.from_numpy(np.ascontiguousarray(x[idx])).to(device)  # (b, ...)
        yb = torch.from_numpy(y[idx]).to(device)  # (b,)
        logits = clf(head(xb))  # (b, C)
        total += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    n = max(len(x), 1)
    return total / n, correct / n


def train_ceiling(
    head: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    holdout: float,
    patience: int,
    seed: int,
    device: torch.device | str = "cpu",
) -> CeilingResult:
    """Fine-tune a copy of ``head`` (trunk rows ``x`` (N, ...) -> h1 (N, D)) with a new
    linear classifier on ``y`` (N,) class indices; return the best held-out epoch's head."""
    device = torch.device(device)
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    n_hold = round(holdout * len(x))
    n_hold = min(max(n_hold, 1), len(x) - 1)
    perm = rng.permutation(len(x))
    hold, fit = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    head = copy.deepcopy(head).to(device).eval().requires_grad_(True)
    with torch.no_grad():
        dim = head(torch.from_numpy(x[:1]).to(device)).shape[1]
    clf = nn.Linear(dim, n_classes).to(device)
    params = [p for p in head.parameters() if p.requires_grad] + list(clf.parameters())
    opt = torch.optim.Adam(params, lr=lr)

    loss0, acc0 = _evaluate(head, clf, x[hold], y[hold], batch_size, device)
    history = [{"epoch": 0, "train_loss": None, "holdout_loss": loss0, "holdout_accuracy": acc0}]
    # epoch 0's classifier is random: the ceiling is the best epoch >= 1 (the head at
    # epoch 0 is the original network, measured separately)
    best_loss, best_epoch, best_state, stale = float("inf"), 0, None, 0
    epoch = 0
    for epoch in tqdm(range(1, epochs + 1), desc="ceiling", leave=False):
        total, n = 0.0, 0
        for idx in _batches(len(fit), batch_size, rng):
            rows = fit[idx]
            xb = torch.from_numpy(np.ascontiguousarray(x[rows])).to(device)  # (b, ...)
            yb = torch.from_numpy(y[rows]).to(device)  # (b,)
            loss = nn.functional.cross_entropy(clf(head(xb)), yb)  # scalar, mean over b
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
            n += len(rows)
        hold_loss, hold_acc = _evaluate(head, clf, x[hold], y[hold], batch_size, device)
        history.append(
            {
                "epoch": epoch,
                "train_loss": round(total / max(n, 1), 6),
                "holdout_loss": round(hold_loss, 6),
                "holdout_accuracy": round(hold_acc, 6),
            }
        )
        log.info(
            "ceiling epoch %d: train CE %.4f, held-out CE %.4f (accuracy %.3f)",
            epoch,
            total / max(n, 1),
            hold_loss,
            hold_acc,
        )
        if hold_loss < best_loss:
            best_loss, best_epoch, stale = hold_loss, epoch, 0
            best_state = copy.deepcopy(head.state_dict())
        else:
            stale += 1
            if stale >= patience:
                log.info("ceiling: no better held-out loss for %d epochs; stopping", stale)
                break
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval().requires_grad_(False)
    history[0]["holdout_loss"] = round(history[0]["holdout_loss"], 6)
    history[0]["holdout_accuracy"] = round(history[0]["holdout_accuracy"], 6)
    return CeilingResult(head=head, best_epoch=best_epoch, epochs_run=epoch, history=history)


@torch.no_grad()
def head_features(
    head: nn.Module, x: np.ndarray, batch_size: int, device: torch.device | str = "cpu"
) -> np.ndarray:
    """(N, D) float32 h1 of trunk rows ``x`` (N, ...) through ``head`` (eval mode)."""
    head = head.to(device).eval()
    out = [
        head(torch.from_numpy(np.ascontiguousarray(x[idx], dtype=np.float32)).to(device))
        .float()
        .cpu()
        .numpy()
        for idx in _batches(len(x), batch_size, None)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
