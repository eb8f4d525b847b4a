"""Which pairs share pixels, and explained shares split by it.

On pairs whose two patches overlap, the top stream's target can be predicted by copying
what the bottom patch already shows: a shortcut, not context (issue 23: a ridge map from
the frozen [h1, o] explains 18% of the targets of overlapping EdgeBox pairs and 0.75% of
the others). Every explained share the pipeline reports is therefore also given on the
*non-overlapping* pairs alone, where context is the only signal.

A pair *overlaps* when the IoU of its two boxes is at least :data:`OVERLAP_IOU`.

The explained share of a subset is ``1 - SSE / SST`` over that subset's rows, SST
centred on the subset's own mean target (the subset's predict-the-mean baseline), as
``explained_share`` over all rows; nan for a subset with fewer than 2 rows.
"""

from __future__ import annotations

import numpy as np

#: IoU at or above which a pair's two patches count as overlapping (sharing pixels)
OVERLAP_IOU = 0.05
#: the names of the two subsets, in the order :func:`split_masks` returns them
SUBSETS = ("overlap", "nonoverlap")


def overlapping(ious: np.ndarray, threshold: float = OVERLAP_IOU) -> np.ndarray:
    """(M,) bool: the pairs whose IoU is at least ``threshold``."""
    return np.asarray(ious, dtype=np.float64) >= threshold


def split_masks(ious: np.ndarray, threshold: float = OVERLAP_IOU) -> dict[str, np.ndarray]:
    """``{"overlap": mask, "nonoverlap": mask}`` of the pairs with IoU ``ious`` (M,)."""
    over = overlapping(ious, threshold)
    return {"overlap": over, "nonoverlap": ~over}


def explained_share(y: np.ndarray, y_hat: np.ndarray) -> float:
    """``1 - SSE / SST`` over all rows and dims of ``y`` (N, D), SST centred on ``y``'s own
    mean; nan when ``y`` has fewer than 2 rows or is constant."""
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    y_hat = np.asarray(y_hat, dtype=np.float64).reshape(len(y), -1)
    sst = float(((y - y.mean(axis=0)) ** 2).sum()) if len(y) else 0.0
    if len(y) < 2 or sst <= 0:
        return float("nan")
    return 1.0 - float(((y - y_hat) ** 2).sum()) / sst


def split_explained(
    y: np.ndarray, y_hat: np.ndarray, ious: np.ndarray, threshold: float = OVERLAP_IOU
) -> dict[str, float]:
    """The explained share of ``y_hat`` (N, D) for ``y`` (N, D) over all pairs and over
    the overlapping and non-overlapping ones (IoU ``ious`` (N,)):
    ``{"all", "overlap", "nonoverlap"}``, plus ``share_overlap`` (share of the pairs that
    overlap)."""
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    y_hat = np.asarray(y_hat, dtype=np.float64).reshape(len(y), -1)
    out = {"all": explained_share(y, y_hat)}
    for name, mask in split_masks(ious, threshold).items():
        out[name] = explained_share(y[mask], y_hat[mask])
    out["share_overlap"] = float(np.mean(overlapping(ious, threshold))) if len(y) else float("nan")
    return out
