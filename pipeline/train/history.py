"""The per-epoch history of a training run: as stored in files, as a CSV and a loss curve."""

from __future__ import annotations

from pathlib import Path

from pipeline.io import atomic_path, write_figure


def without_wall_clock(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """The per-epoch records minus their ``seconds``, as stored in ``checkpoint.pt`` and
    ``model.pt``: a resumed or repeated run must write the same bytes, or DVC reruns
    ``classify`` and ``detect`` for nothing."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def write_history(
    history: list[dict[str, float]],
    fields: list[str],
    csv_path: Path,
    png_path: Path,
    baseline: float | None = None,
    *,
    ylabel: str = "loss",
    title: str = "training",
    baseline_label: str = "baseline",
    marker: tuple[int, str] | None = None,
) -> None:
    """The per-epoch records as a CSV (a DVC plot) and a PNG loss curve, atomically.

    ``fields``: the CSV columns (a key missing from a record leaves its cell empty, e.g.
    ``seconds`` of the epochs a resumed run read from its checkpoint). ``baseline``: a
    reference loss on the held-out set (e.g. the loss of predicting the mean target),
    drawn as a horizontal line. ``marker``: (epoch, label) drawn as a vertical line (e.g.
    the epoch whose weights were kept).
    """
    import csv

    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k, "") for k in fields})

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [r["epoch"] for r in history]
    ax.plot(epochs, [r["train_loss"] for r in history], "o-", ms=3, label="train")
    ax.plot(epochs, [r["test_loss"] for r in history], "s-", ms=3, label="held-out test")
    if baseline is not None:
        ax.axhline(baseline, color="grey", ls="--", lw=1, label=baseline_label)
    if marker is not None:
        ax.axvline(marker[0], color="tab:green", ls=":", lw=1, label=marker[1])
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    write_figure(fig, png_path, dpi=100)
