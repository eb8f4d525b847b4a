"""Figures 3 and 4 of the paper, and a strip of training samples, as PNG files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np

from pipeline.io import write_figure


def _save(fig: plt.Figure, path: Path) -> None:
    write_figure(fig, path, dpi=110, bbox_inches="tight")


def figure3(curves: dict[str, Sequence[float]], path: str | Path, title: str = "") -> None:
    """Test MSE per epoch, one line per run (paper Fig. 3)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, values in curves.items():
        ax.plot(np.arange(1, len(values) + 1), values, marker=".", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test MSE (squared error per pair)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or "Synthetic data: test error with and without the offset")
    _save(fig, Path(path))


def figure4(
    rows: Sequence[str],
    inputs: np.ndarray,
    targets: np.ndarray,
    recon: dict[int, np.ndarray],
    path: str | Path,
) -> None:
    """Grid of decoded h3 (paper Fig. 4): one row per probe, one column per epoch.

    ``inputs``: (K, S, S, 3) uint8 bottom patches; ``targets``: (K, P, P, 3) uint8 true top
    patches; ``recon``: epoch -> (K, P, P, 3) float images in [0, 1].
    """
    epochs = sorted(recon)
    n_cols = 2 + len(epochs)
    fig, axes = plt.subplots(
        len(rows), n_cols, figsize=(1.3 * n_cols, 1.45 * len(rows)), squeeze=False
    )
    for r, label in enumerate(rows):
        cells = [inputs[r], targets[r]] + [recon[e][r] for e in epochs]
        titles = ["input", "true top"] + [f"epoch {e}" for e in epochs]
        for c, (img, title) in enumerate(zip(cells, titles, strict=True)):
            ax = axes[r, c]
            ax.imshow(
                img, interpolation="nearest", vmin=0, vmax=255 if img.dtype == np.uint8 else 1
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle("h3 decoded to pixels for a test circle and an offset", fontsize=9)
    _save(fig, Path(path))


def samples(canvases: Sequence[np.ndarray], path: str | Path, per_row: int = 6) -> None:
    """Full canvases of some training pairs (crop boxes outlined), Fig. 4 (top)."""
    n = len(canvases)
    n_rows = max(1, -(-n // per_row))
    fig, axes = plt.subplots(n_rows, per_row, figsize=(1.8 * per_row, 1.8 * n_rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k < n:
            ax.imshow(canvases[k], interpolation="nearest")
        ax.set_axis_off()
    fig.suptitle("training samples (circle = bottom patch, other box = top patch)", fontsize=9)
    _save(fig, Path(path))
