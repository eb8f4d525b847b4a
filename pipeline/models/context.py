"""The spatial context module and the SCN loss (paper section 3).

    h2 = sigmoid(V1 h1 + Vloc o + b1)      # (B, hidden)
    h3 = V2 h2 + b2                        # (B, D), the size of the target

``h1`` is the bottom stream's representation of patch j, ``o`` the (B, 8) corner offset
o_ij = b_i - b_j, and the target is the frozen top stream's representation of patch i.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

OFFSET_DIM = 8  # (x, y) of the top-left, top-right, bottom-left, bottom-right corners


class ContextModule(nn.Module):
    """f([h1, o]; V). With ``use_offset=False`` the offset input is dropped (Fig. 3 ablation)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 1024, use_offset: bool = True):
        super().__init__()
        self.use_offset = use_offset
        self.v1 = nn.Linear(in_dim, hidden)  # V1 and b1
        self.vloc = nn.Linear(OFFSET_DIM, hidden, bias=False) if use_offset else None  # Vloc
        self.v2 = nn.Linear(hidden, out_dim)  # V2 and b2

    def forward(self, h1: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        pre = self.v1(h1)  # (B, hidden)
        if self.vloc is not None:
            if offset is None:
                raise ValueError("this context module uses offsets: pass a (B, 8) offset")
            pre = pre + self.vloc(offset)  # (B, hidden)
        h2 = torch.sigmoid(pre)  # (B, hidden)
        return self.v2(h2)  # (B, D) = h3


def scn_loss(h3: torch.Tensor, target: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Squared error ||target - h3||^2 per pair, summed over the feature dimension.

    ``reduction='sum'`` sums over pairs (the paper's objective); ``'mean'`` averages over
    pairs (same minimiser, a learning rate independent of the batch size);
    ``'element_mean'`` averages over pairs and feature dimensions (``mse_loss``'s scale,
    the sum divided by B x D).
    """
    per_pair = (target - h3).pow(2).sum(dim=1)  # (B,)
    if reduction == "sum":
        return per_pair.sum()
    if reduction == "mean":
        return per_pair.mean()
    if reduction == "element_mean":
        return per_pair.mean() / target.shape[1]
    raise ValueError(
        f"reduction: {reduction!r} is not a valid choice; allowed: sum, mean, element_mean"
    )


def assert_frozen(module: nn.Module, name: str = "top stream") -> None:
    """MoCo-style sanity check: every parameter of ``module`` is frozen and in eval mode."""
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    if trainable:
        raise AssertionError(f"{name} must be frozen, but {trainable[:3]} require grad")
    if module.training:
        raise AssertionError(f"{name} must be in eval mode")


def fit_on_features(
    fit: tuple[np.ndarray, np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray, np.ndarray],
    hidden: int = 1024,
    epochs: int = 15,
    lr: float = 1e-3,
    batch_size: int = 64,
    patience: int = 3,
    seed: int = 0,
) -> tuple[np.ndarray, int]:
    """A context module trained on fixed features: ``fit`` and ``test`` are (h1 (N, D),
    offset (N, 8), target (N, D_T)) arrays. Adam at ``lr`` on the per-pair mean squared
    error, b2 starting at the mean fit target, ``epochs`` epochs; the epoch of the lowest
    held-out loss is kept (stopping ``patience`` epochs after it). Returns the held-out
    predictions of that epoch (N_test, D_T) and the epoch.

    With h1 the frozen network's features this is what a context module can learn with
    no fine-tuning: the diagnose stage's ceiling of what context teaches today's features
    (the train stage's frozen baseline trains the same module with train.*'s regime).
    """
    gen = torch.Generator().manual_seed(int(seed))
    h1, off, y = (torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in fit)
    th1, toff, ty = (torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in test)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = ContextModule(h1.shape[1], y.shape[1], hidden=hidden)
    with torch.no_grad():
        model.v2.bias.copy_(y.mean(0))
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def predict() -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            out = torch.cat([model(th1[i : i + 1024], toff[i : i + 1024])
                             for i in range(0, len(th1), 1024)])  # fmt: skip
        model.train()
        return out

    best_pred, best_loss, best_epoch = predict(), float("inf"), 0
    for epoch in range(1, epochs + 1):
        for rows in torch.randperm(len(h1), generator=gen).split(batch_size):
            loss = scn_loss(model(h1[rows], off[rows]), y[rows], "mean")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        pred = predict()
        test_loss = float(scn_loss(pred, ty, "mean"))
        if test_loss < best_loss:
            best_pred, best_loss, best_epoch = pred, test_loss, epoch
        elif epoch - best_epoch >= patience:
            break
    return best_pred.numpy(), best_epoch
