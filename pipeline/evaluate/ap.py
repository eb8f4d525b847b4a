"""Average precision: the VOC2010+ area AP, the VOC2007 11-point AP, and ranking AP.

Plain functions over NumPy arrays, shared by the classification (``classify``) and the
detection (``detect``) evaluations.

- :func:`ap_area` is the area under the monotone precision envelope (VOC2010 and later,
  py-faster-rcnn ``voc_ap(use_07_metric=False)``).
- :func:`ap_11point` is the VOC2007 11-point interpolated AP
  (``voc_ap(use_07_metric=True)``).
- :func:`average_precision` ranks classification scores against labels in
  ``{1, -1, 0}`` (0 = difficult, ignored) and returns one of the two.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

APKind = Literal["area", "11point"]


def _as_curve(recall, precision) -> tuple[np.ndarray, np.ndarray]:
    rec = np.asarray(recall, dtype=np.float64).ravel()
    prec = np.asarray(precision, dtype=np.float64).ravel()
    if rec.shape != prec.shape:
        raise ValueError(f"recall {rec.shape} and precision {prec.shape} differ in length")
    return rec, prec


def ap_area(recall, precision) -> float:
    """Area under the monotone precision envelope (VOC2010+ AP).

    ``recall`` and ``precision`` are the points of a ranked list, in rank order (recall
    non-decreasing). The curve is padded with (0, 0) and (1, 0), the precision made
    non-increasing from the right (the envelope), and the area summed where recall
    changes. An empty curve gives 0.
    """
    rec, prec = _as_curve(recall, precision)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # envelope: max precision at recall >= r
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def ap_11point(recall, precision) -> float:
    """VOC2007 11-point interpolated AP: mean over t in {0, 0.1, ..., 1} of max prec at rec >= t."""
    rec, prec = _as_curve(recall, precision)
    total = 0.0
    for t in np.linspace(0.0, 1.0, 11):
        above = prec[rec >= t - 1e-12]
        total += float(above.max()) if above.size else 0.0
    return total / 11.0


def precision_recall(scores, labels) -> tuple[np.ndarray, np.ndarray, int]:
    """Recall and precision at each rank of ``scores`` (descending) for labels 1/-1/0.

    Items labelled 0 are removed first. The sort is stable (``mergesort`` on the
    negated scores), so tied scores keep their input order, as in VISSL and
    py-faster-rcnn. Returns (recall, precision, number of positives); with no positive
    recall is all zeros.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in length")
    bad = ~np.isin(y, (1, -1, 0))
    if bad.any():
        raise ValueError(f"labels must be 1, -1 or 0; got {np.unique(y[bad]).tolist()}")
    keep = y != 0
    s, y = s[keep], y[keep]
    order = np.argsort(-s, kind="mergesort")
    tp = np.cumsum(y[order] == 1).astype(np.float64)
    fp = np.cumsum(y[order] == -1).astype(np.float64)
    n_pos = int((y == 1).sum())
    recall = tp / max(n_pos, 1)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return recall, precision, n_pos


def average_precision(scores, labels, kind: APKind = "area") -> float:
    """AP of ranking by ``scores`` against ``labels`` (1 positive, -1 negative, 0 ignored).

    ``kind`` is ``"area"`` (VOC2010+) or ``"11point"`` (VOC2007). With no positive
    among the non-ignored items the AP is ``nan`` (undefined; callers leave such classes
    out of the mean and say so).
    """
    if kind not in ("area", "11point"):
        raise ValueError(f"kind: {kind!r} is not valid; allowed: area, 11point")
    recall, precision, n_pos = precision_recall(scores, labels)
    if n_pos == 0:
        return float("nan")
    return ap_area(recall, precision) if kind == "area" else ap_11point(recall, precision)


def mean_ap(aps) -> float:
    """Mean over the defined (non-nan) APs; nan when none is defined."""
    a = np.asarray(list(aps), dtype=np.float64)
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else float("nan")
