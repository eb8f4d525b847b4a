"""Paired bootstrap intervals for mAP differences between two models on one test set.

Two models (the original network and SCN) score the same M test items (objects for Obj,
images for Img) for C classes. One resample draws M items with replacement; the SAME
resample is used for both models (paired), each class's area AP (:mod:`pipeline.evaluate.ap`)
and the mAP (mean over the classes with a positive in the resample) are recomputed for
each, and the difference mAP_b - mAP_a recorded. The 95% interval is the 2.5th and
97.5th percentile of those differences (the percentile bootstrap, Efron and Tibshirani
1993, ch. 13). An interval holding 0 reads "no measurable difference", one above 0 a
"gain" of b over a, one below a "loss".

The resamples depend only on the test set's size, the number of resamples and the seed,
so runs of several SCN training seeds evaluated on one test set share them;
:func:`pooled_interval` then bootstraps the mean difference over seeds and test items
together (``experiments/results.py`` with ``--seeds``). The low-shot protocol's difference
(:func:`draws_differences`) is pooled the same way over its draws: each draw's SVMs are
resampled on the same test resamples, and resample b averages the draws of a resample of
the draws (a two-way bootstrap over test items x draws; pooled over training seeds too,
a three-way one, since every seed's run shares the draws, the draw resamples and the
test resamples).

A resample is held as per-item counts (B, M), so one class's AP over many resamples is a
few cumulative sums over the items sorted once by score (:func:`weighted_ap`): a copy of
an item is a separate rank with the same score, which is what sorting the expanded
resample gives. Ties between different items are broken by item order (the reference
:func:`~pipeline.evaluate.ap.average_precision` breaks them by their order in the
expanded array, which differs only when two different items share a score).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.io import atomic_path

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

    def to_short_dict(self) -> dict:
        """The difference, its interval and verdict only (``diff``, ``lo``, ``hi``,
        ``verdict``): the low-shot metrics' entry per k."""
        return {
            "diff": round(self.value, 6),
            "lo": round(self.ci_low, 6),
            "hi": round(self.ci_high, 6),
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
    w = np.asarray(weights, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")  # stable: ties keep item order
    ranked = order[y[order] != 0]  # difficult items take no rank
    at = np.flatnonzero(y[ranked] == 1)  # (P,) the positives' places among them
    if not len(at):
        return np.full(len(w), np.nan)
    # the sums of ranked_envelope_sum at the positives only (the envelope's maximum is
    # taken over them): each positive's copies, and the negative copies ranked before it as
    # segment sums between consecutive positives (a segment ends at its positive, so its
    # sum holds that positive's copies too). Counts are integers: the sums are exact.
    wp = w[:, ranked[at]]  # (B, P)
    starts = np.concatenate([[0], at[:-1] + 1])
    seg = np.add.reduceat(w[:, ranked[: at[-1] + 1]], starts, axis=1)  # (B, P)
    tp = np.cumsum(wp, axis=1)  # positive copies ranked so far
    fp = np.cumsum(seg - wp, axis=1)  # negative copies ranked before each positive
    counted = wp > 0  # positives drawn at least once
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(counted, tp / (tp + fp), -np.inf)  # at each one's last copy
    env = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]  # max precision at rank >= r
    total = (wp * np.where(counted, env, 0.0)).sum(axis=1)
    n_pos = tp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pos > 0, total / n_pos, np.nan)


def ranked_envelope_sum(
    w: np.ndarray, pos: np.ndarray, neg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The numerator of a weighted area AP over items already in rank order.

    ``w`` (B, K): copies of each item in each resample; ``pos``, ``neg`` (K,): 1 for a
    positive / negative item (neither: ignored). Returns (B,) the sum over positive items of
    copies x the precision envelope at the item's last copy (the copies of one item share
    it), and (B,) the positive copies ranked in all.
    """
    tp = np.cumsum(w * pos, axis=1)  # (B, K) positive copies ranked so far
    fp = np.cumsum(w * neg, axis=1)
    counted = (pos > 0) & (w > 0)  # (B, K) positive items drawn at least once
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(counted, tp / (tp + fp), -np.inf)  # precision at each one's last copy
    env = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]  # max precision at rank >= r
    total = (w * np.where(counted, env, 0.0)).sum(axis=1)
    return total, (tp[:, -1] if pos.size else np.zeros(len(w)))


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


def bootstrap_differences(
    scores_a: np.ndarray, scores_b: np.ndarray, labels: np.ndarray, n_boot: int, seed: int
) -> tuple[float, np.ndarray]:
    """(mAP_b - mAP_a on the full test set, (n_boot,) differences on the paired resamples,
    nan where a resample has no positive at all). The resamples depend only on the number
    of test items, ``n_boot`` and ``seed``: two model pairs scored on the same test set
    with the same seed share every resample (what :func:`pooled_interval` needs)."""
    values, diffs = _shared_resamples([(scores_a, scores_b)], labels, n_boot, seed)
    return float(values[0]), diffs[0]


def _shared_resamples(
    pairs: list[tuple[np.ndarray, np.ndarray]], labels: np.ndarray, n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`bootstrap_differences` of several (scores_a, scores_b) pairs on the same
    test items, every pair on the same resamples (drawn once): (S,) values, (S, n_boot)."""
    if n_boot < 1:
        raise ValueError(f"n_boot: {n_boot} is not allowed; allowed: >= 1")
    cols = [_paired_columns(a, b, labels) for a, b in pairs]
    m = len(np.asarray(labels))
    values = np.array([map_differences(a, b, y, np.ones((1, m)))[0] for a, b, y in cols])
    rng = np.random.default_rng(seed)
    diffs = np.empty((len(cols), n_boot))
    for start in range(0, n_boot, CHUNK):
        w = resample_counts(m, min(CHUNK, n_boot - start), rng)
        for i, (a, b, y) in enumerate(cols):
            diffs[i, start : start + len(w)] = map_differences(a, b, y, w)
    return values, diffs


def percentile_interval(
    value: float, diffs: np.ndarray, n_boot: int, level: float = LEVEL
) -> Interval:
    """The percentile interval of the bootstrap ``diffs`` (nan ones dropped) around ``value``."""
    if not 0 < level < 1:
        raise ValueError(f"level: {level} is not allowed; allowed: 0 < level < 1")
    diffs = np.asarray(diffs, dtype=np.float64)
    diffs = diffs[~np.isnan(diffs)]
    if not len(diffs):
        nan = float("nan")
        return Interval(value, nan, nan, nan, n_boot, level)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(diffs, [tail, 100 - tail])
    return Interval(value, float(lo), float(hi), float(diffs.mean()), n_boot, level)


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
    if not 0 < level < 1:
        raise ValueError(f"level: {level} is not allowed; allowed: 0 < level < 1")
    value, diffs = bootstrap_differences(scores_a, scores_b, labels, n_boot, seed)
    return percentile_interval(value, diffs, n_boot, level)


def pooled_interval(
    values: np.ndarray, diffs: np.ndarray, seed: int, level: float = LEVEL
) -> Interval:
    """Interval of the mean difference over S training seeds, resampling test items AND seeds.

    ``values`` (S,): each seed's difference on the full test set; ``diffs`` (S, B): each
    seed's differences on the SAME B paired resamples of the test items (the classify stage
    draws them from ``classify.seed`` and the test set only, so every seed's run shares
    them). Draw b resamples S seeds with replacement and averages their differences on test
    resample b: a two-way bootstrap over the crossed design (test items x seeds). With one
    seed it is the single run's percentile interval. The value is the mean of ``values``.
    """
    v = np.asarray(values, dtype=np.float64)
    d = np.asarray(diffs, dtype=np.float64)
    if v.ndim != 1 or d.ndim != 2 or d.shape[0] != len(v) or not len(v):
        raise ValueError(
            f"values {v.shape} and diffs {d.shape}: expected (S,) and (S, B) with S >= 1"
        )
    return percentile_interval(float(v.mean()), pooled_differences(d, seed), d.shape[1], level)


def pooled_differences(diffs: np.ndarray, seed: int | Sequence[int]) -> np.ndarray:
    """(B,) the mean over a resample of the S rows of ``diffs`` (S, B) on each column b:
    column b draws S rows with replacement (seeded by ``seed``, anything
    ``np.random.default_rng`` takes) and averages them (nan ones left out). One row: itself."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 2 or not len(d):
        raise ValueError(f"diffs {d.shape}: expected (S, B) with S >= 1")
    s, b = d.shape
    if s == 1:
        return d[0]
    pick = np.random.default_rng(seed).integers(0, s, size=(b, s))  # (B, S) rows drawn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column that is all nan
        return np.nanmean(d[pick, np.arange(b)[:, None]], axis=1)  # (B,)


# the stream of the draw resamples, apart from the test resamples' (both from one seed)
DRAWS_STREAM = 1


def draws_differences(
    scores_a: np.ndarray, scores_b: np.ndarray, labels: np.ndarray, n_boot: int, seed: int
) -> tuple[float, np.ndarray]:
    """The low-shot difference mAP_b - mAP_a over S draws and its bootstrap distribution.

    ``scores_a``, ``scores_b`` (S, M, C): the two models' test decision values of each
    draw's SVMs (draw s of both fitted on the same training items); ``labels`` (M, C).
    Returns the mean over the draws of each draw's difference on the full test set, and
    (n_boot,) its resampled values: every draw is resampled on the same test resamples
    (:func:`bootstrap_differences` with ``seed``), and resample b averages a resample of
    the draws (:func:`pooled_differences`, seeded by ``[seed, DRAWS_STREAM]``), so the
    interval holds both the test-set and the draw-to-draw variation. Everything depends
    only on S, M, ``n_boot`` and ``seed``: runs on the same draws and test set share it.
    """
    a, b = np.asarray(scores_a), np.asarray(scores_b)
    if a.ndim != 3 or a.shape != b.shape or not len(a):
        raise ValueError(f"scores {a.shape} / {b.shape}: expected the same (S, M, C), S >= 1")
    # (S,), (S, B): every draw on the same test resamples
    values, diffs = _shared_resamples(list(zip(a, b, strict=True)), labels, n_boot, seed)
    return float(values.mean()), pooled_differences(diffs, [seed, DRAWS_STREAM])


DISTRIBUTION_KEYS = ("value", "seed", "n_boot", "n_test")
# the file classify and detect write into their output folders (experiments/results.py)
DISTRIBUTIONS_FILE = "bootstrap.npz"


def lowshot_key(setting: str, k: int) -> str:
    """The name of a low-shot difference's record in :data:`DISTRIBUTIONS_FILE`."""
    return f"lowshot_{setting}_k{k}"


def write_distributions(path: Path, records: dict[str, dict]) -> None:
    """Save each setting's bootstrap record (``value``, ``diffs`` (B,), ``seed``,
    ``n_boot``, ``n_test``) to one ``.npz``, written under a temporary name and renamed.
    No records (bootstrap off): an earlier run's file at ``path`` is removed, so no stale
    distributions outlive the results they belonged to."""
    if not records:
        Path(path).unlink(missing_ok=True)
        return
    arrays: dict[str, np.ndarray] = {}
    for setting, rec in records.items():
        arrays[f"{setting}__diffs"] = np.asarray(rec["diffs"], dtype=np.float64)
        for key in DISTRIBUTION_KEYS:
            arrays[f"{setting}__{key}"] = np.asarray(rec[key])
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def read_distributions(path: Path) -> dict[str, dict]:
    """The records :func:`write_distributions` saved: setting -> record."""
    out: dict[str, dict] = {}
    with np.load(Path(path)) as z:
        for name in z.files:
            setting, _, key = name.partition("__")
            value = z[name]
            out.setdefault(setting, {})[key] = value if key == "diffs" else value.item()
    for setting, rec in out.items():
        missing = [k for k in ("diffs", *DISTRIBUTION_KEYS) if k not in rec]
        if missing:
            raise ValueError(f"{path}: setting {setting!r} lacks {', '.join(missing)}")
    return out
