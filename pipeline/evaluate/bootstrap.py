"""Paired bootstrap intervals for mAP differences between two models on one test set.

Two models (the original network and SCN) score the same M test items (objects for Obj,
images for Img) for C classes. One resample draws M items with replacement; the SAME
resample is used for both models (paired), each class's area AP (:mod:`pipeline.evaluate.ap`)
and the mAP (mean over the classes with a positive in the resample) are recomputed for
each, and the difference mAP_b - mAP_a recorded. The 95% interval is the 2.5th and
97.5th percentile of those differences (the percentile bootstrap, Efron and Tibshirani
1993, ch. 13). An interval holding 0 reads "no measurable difference", one above 0 a
"gain" of b over a, one below a "loss".

A resample is held as per-item counts (B, M), so one class's AP over many resamples is a
few cumulative sums over the items sorted once by score (:func:`weighted_ap`): a copy of
an item is a separate rank with the same score, which is what sorting the expanded
resample gives. Ties between different items are broken by item order (the reference
:func:`~pipeline.evaluate.ap.average_precision` breaks them by their order in the
expanded array, which differs only when two different items share a score).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
CHUNK = 256  # resamples per vectorised block (memory: CHUNK x M floats a few times)


@dataclass(frozen=True)
class Interval:
    """A bootstrap interval of a difference b - a (``value``: on the full test set)."""

    value: float
    ci_low: float
    ci_high: float
    mean: float
    n_boot: int
    level: float = LEVEL

    @property
    def verdict(self) -> str:
        if self.ci_low > 0:
            return "gain"
        if self.ci_high < 0:
            return "loss"
        return "no measurable difference"

    def to_dict(self) -> dict:
        return {
            "value": round(self.value, 6),
            "ci_low": round(self.ci_low, 6),
            "ci_high": round(self.ci_high, 6),
            "level": self.level,
            "n_boot": self.n_boot,
            "bootstrap_mean": round(self.mean, 6),
            "verdict": self.verdict,
        }


def resample_counts(m: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, m) counts: how often each of m items is drawn in each resample of size m."""
    idx = rng.integers(0, m, size=(n_boot, m))  # (B, M) drawn items
    flat = (idx + m * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * m).reshape(n_boot, m).astype(np.float64)


def weighted_ap(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Area AP (VOC2010+) of ``scores`` (M,) against ``labels`` (M,) in {1, -1, 0} on each
    resample given as item ``weights`` (B, M); nan where a resample has no positive.

    Equal to :func:`~pipeline.evaluate.ap.average_precision` of the expanded resample:
    each positive's copies share the precision envelope of its last copy, so
    AP = sum over positive items of count x envelope / number of positive copies.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    order = np.argsort(-s, kind="mergesort")  # stable: ties keep item order
    pos = (y[order] == 1).astype(np.float64)  # (M,)
    neg = (y[order] == -1).astype(np.float64)
    w = np.asarray(weights, dtype=np.float64)[:, order]  # (B, M)
    tp = np.cumsum(w * pos, axis=1)  # (B, M) positive copies ranked so far
    fp = np.cumsum(w * neg, axis=1)
    counted = (pos > 0) & (w > 0)  # (B, M) positive items drawn at least once
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(counted, tp / (tp + fp), -np.inf)  # precision at each one's last copy
    env = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]  # max precision at rank >= r
    n_pos = tp[:, -1] if len(s) else np.zeros(len(w))  # (B,)
    total = (w * np.where(counted, env, 0.0)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pos > 0, total / n_pos, np.nan)


def mean_ap_weighted(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) mAP over the classes (columns of ``scores``/``labels`` (M, C)) with a positive
    in each resample."""
    aps = np.stack(
        [weighted_ap(scores[:, c], labels[:, c], weights) for c in range(scores.shape[1])], axis=1
    )  # (B, C)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample with no positive at all
        return np.nanmean(aps, axis=1)


def map_differences(
    scores_a: np.ndarray, scores_b: np.ndarray, labels: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """(B,) mAP_b - mAP_a on each resample (``weights`` (B, M) item counts)."""
    return mean_ap_weighted(scores_b, labels, weights) - mean_ap_weighted(scores_a, labels, weights)


def _paired_columns(
    scores_a: np.ndarray, scores_b: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b, y = np.asarray(scores_a), np.asarray(scores_b), np.asarray(labels)
    if not a.shape == b.shape == y.shape or a.ndim != 2:
        raise ValueError(
            f"scores {a.shape} / {b.shape} and labels {y.shape} must be the same (M, C)"
        )
    # a class without an SVM (no training positive: nan scores) has no AP for either model
    keep = ~(np.isnan(a).all(axis=0) | np.isnan(b).all(axis=0))
    return a[:, keep], b[:, keep], y[:, keep]


def paired_bootstrap(
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    labels: np.ndarray,
    n_boot: int,
    seed: int,
    level: float = LEVEL,
) -> Interval:
    """Percentile interval of mAP_b - mAP_a over ``n_boot`` paired resamples of the test
    items (rows of the (M, C) ``scores_a``, ``scores_b`` and ``labels``), seeded."""
    if n_boot < 1:
        raise ValueError(f"n_boot: {n_boot} is not allowed; allowed: >= 1")
    if not 0 < level < 1:
        raise ValueError(f"level: {level} is not allowed; allowed: 0 < level < 1")
    a, b, y = _paired_columns(scores_a, scores_b, labels)
    m = len(y)
    value = float(map_differences(a, b, y, np.ones((1, m)))[0])
    rng = np.random.default_rng(seed)
    diffs = np.concatenate(
        [
            map_differences(a, b, y, resample_counts(m, min(CHUNK, n_boot - s), rng))
            for s in range(0, n_boot, CHUNK)
        ]
    )  # (n_boot,)
    diffs = diffs[~np.isnan(diffs)]
    if not len(diffs):
        nan = float("nan")
        return Interval(value, nan, nan, nan, n_boot, level)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(diffs, [tail, 100 - tail])
    return Interval(value, float(lo), float(hi), float(diffs.mean()), n_boot, level)
