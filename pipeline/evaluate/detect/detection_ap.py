"""PASCAL VOC detection AP with py-faster-rcnn ``voc_eval`` semantics.

For one class, detections from all images are ranked by score (stable sort, so tied
scores keep their input order). Each detection is matched to the ground truth of the
same image and class with which it has the largest IoU. When that IoU is above the
threshold (``> 0.5``, strictly, as in VOC):

- a "difficult" ground truth makes the detection neither a true nor a false positive
  (it is dropped from the ranking);
- an unmatched, non-difficult ground truth makes it a true positive and is marked;
- an already matched one makes it a false positive (a duplicate).

Otherwise it is a false positive. Recall is over the non-difficult ground truths. The AP
is the area AP (VOC2010+) or the 11-point AP (VOC2007) of :mod:`pipeline.evaluate.ap`.

Boxes use the project convention (continuous corners, width ``x2 - x1``); the VOC
devkit's ``+1`` on integer corners is already folded into that convention, so IoU here
is the plain continuous IoU (identical to the devkit's on VOC's integer boxes).

:func:`detection_bootstrap` gives the paired bootstrap of a difference of two detectors'
mAP over the test images (each class's AP recomputed on every resample from the
detections' fixed outcomes, :func:`weighted_detection_ap`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.boxes import box_iou
from pipeline.evaluate.ap import ap_11point, ap_area, mean_ap
from pipeline.evaluate.bootstrap import CHUNK, ranked_envelope_sum, resample_counts


@dataclass(frozen=True)
class GroundTruth:
    """The ground truth of one image: boxes (G, 4), class indices (G,), difficult (G,)."""

    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray

    @staticmethod
    def make(boxes, labels, difficult=None) -> GroundTruth:
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        lab = np.asarray(labels, dtype=np.int64).reshape(-1)
        d = (
            np.zeros(len(lab), dtype=bool)
            if difficult is None
            else np.asarray(difficult, dtype=bool).reshape(-1)
        )
        if not (len(b) == len(lab) == len(d)):
            raise ValueError(f"boxes {b.shape}, labels {lab.shape}, difficult {d.shape} differ")
        return GroundTruth(b, lab, d)


def class_outcomes(
    image_index: np.ndarray,
    scores: np.ndarray,
    boxes: np.ndarray,
    gt_boxes: Sequence[np.ndarray],
    gt_difficult: Sequence[np.ndarray],
    iou_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One class's ranked detections matched to the ground truth (module docstring).

    ``image_index`` (N,), ``scores`` (N,), ``boxes`` (N, 4): the detections of this
    class. ``gt_boxes[k]`` (G_k, 4) and ``gt_difficult[k]`` (G_k,): this class's ground
    truth in image k. Returns, in rank order and without the detections that match a
    difficult box, each detection's image (K,) and true-positive flag (K,) (the rest are
    false positives), and the number of non-difficult ground truths per image (n_images,).
    """
    image_index = np.asarray(image_index, dtype=np.int64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not (len(image_index) == len(scores) == len(boxes)):
        raise ValueError("image_index, scores and boxes must have the same length")
    n_pos = np.array([int((~np.asarray(d, dtype=bool)).sum()) for d in gt_difficult], np.int64)
    matched = [np.zeros(len(g), dtype=bool) for g in gt_boxes]
    order = np.argsort(-scores, kind="mergesort")
    tp = np.zeros(len(order), dtype=bool)
    keep = np.ones(len(order), dtype=bool)
    for rank, d in enumerate(order):
        k = int(image_index[d])
        g = np.asarray(gt_boxes[k], dtype=np.float64).reshape(-1, 4)
        if len(g) == 0:
            continue  # false positive
        ious = box_iou(boxes[d], g)[0]  # (G,)
        j = int(np.argmax(ious))
        if ious[j] > iou_threshold:
            if gt_difficult[k][j]:
                keep[rank] = False  # neither counted nor penalised
            elif not matched[k][j]:
                tp[rank] = True
                matched[k][j] = True
            # else: a duplicate detection, false positive
    return image_index[order][keep], tp[keep], n_pos


def voc_eval_class(
    image_index: np.ndarray,
    scores: np.ndarray,
    boxes: np.ndarray,
    gt_boxes: Sequence[np.ndarray],
    gt_difficult: Sequence[np.ndarray],
    iou_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Recall and precision of one class's ranked detections; returns (rec, prec, n_pos).

    Arguments as :func:`class_outcomes`. Detections matching a difficult box are removed
    from the curve.
    """
    _, hit, n_pos_image = class_outcomes(
        image_index, scores, boxes, gt_boxes, gt_difficult, iou_threshold
    )
    n_pos = int(n_pos_image.sum())
    tp, fp = np.cumsum(hit.astype(np.float64)), np.cumsum((~hit).astype(np.float64))
    rec = tp / max(n_pos, 1)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return rec, prec, n_pos


def weighted_detection_ap(
    image: np.ndarray, hit: np.ndarray, n_pos_image: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Area AP of one class on each resample of the test images given as image ``weights``
    (B, n_images) copies; nan where a resample has no non-difficult ground truth.

    ``image``, ``hit`` (K,) and ``n_pos_image`` come from :func:`class_outcomes`. Equal to
    the AP of the expanded resample (each image repeated as often as drawn): a drawn
    image's detections keep their outcomes, and the copies of a true positive share the
    precision envelope of its last copy, as in :func:`pipeline.evaluate.bootstrap.weighted_ap`.
    """
    w = np.asarray(weights, dtype=np.float64)[:, image]  # (B, K) copies of each detection
    pos = hit.astype(np.float64)
    total, _ = ranked_envelope_sum(w, pos, 1.0 - pos)
    # recall counts every non-difficult ground truth of the drawn images, found or not
    n_pos = np.asarray(weights, dtype=np.float64) @ n_pos_image.astype(np.float64)  # (B,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pos > 0, total / n_pos, np.nan)


def class_inputs(
    detections: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    ground_truth: Sequence[GroundTruth],
    c: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Class ``c``'s detections over all images (image index (N,), scores (N,), boxes
    (N, 4)) and its ground truth per image (boxes, difficult): what
    :func:`voc_eval_class` and :func:`class_outcomes` take."""
    idx, sc, bx = [], [], []
    for k, (boxes, scores, labels) in enumerate(detections):
        sel = np.asarray(labels).reshape(-1) == c
        idx.append(np.full(int(sel.sum()), k, dtype=np.int64))
        sc.append(np.asarray(scores, dtype=np.float64).reshape(-1)[sel])
        bx.append(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[sel])
    gtb = [gt.boxes[gt.labels == c] for gt in ground_truth]
    gtd = [gt.difficult[gt.labels == c] for gt in ground_truth]
    return np.concatenate(idx), np.concatenate(sc), np.concatenate(bx), gtb, gtd


def evaluate_detections(
    detections: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    ground_truth: Sequence[GroundTruth],
    classes: Sequence[str],
    iou_threshold: float = 0.5,
) -> dict:
    """Per-class and mean AP (area and 11-point) over a test set.

    ``detections[k]`` = (boxes (N, 4), scores (N,), labels (N,)) of image k, labels being
    class indices into ``classes``; ``ground_truth[k]`` its :class:`GroundTruth`. A class
    with no non-difficult ground truth has AP ``nan`` and is left out of the means
    (listed in ``classes_without_positives``).
    """
    if len(detections) != len(ground_truth):
        raise ValueError(f"{len(detections)} detection lists for {len(ground_truth)} images")
    per_class: dict[str, dict] = {}
    for c, name in enumerate(classes):
        rec, prec, n_pos = voc_eval_class(*class_inputs(detections, ground_truth, c), iou_threshold)
        if n_pos == 0:
            area = eleven = float("nan")
        else:
            area, eleven = ap_area(rec, prec), ap_11point(rec, prec)
        per_class[name] = {
            "ap": area,
            "ap_11point": eleven,
            "n_pos": n_pos,
            "n_det": len(rec),
            "recall": float(rec[-1]) if len(rec) and n_pos else 0.0,
        }
    return {
        "map": mean_ap(v["ap"] for v in per_class.values()),
        "map_11point": mean_ap(v["ap_11point"] for v in per_class.values()),
        "per_class": per_class,
        "classes_without_positives": [n for n, v in per_class.items() if v["n_pos"] == 0],
        "iou_threshold": iou_threshold,
    }


def detection_bootstrap(
    detections_a: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    detections_b: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    ground_truth: Sequence[GroundTruth],
    n_classes: int,
    n_boot: int,
    seed: int,
    iou_threshold: float = 0.5,
) -> tuple[float, np.ndarray]:
    """Paired bootstrap of the detection mAP difference b - a over the test images.

    Two detectors' detections (as :func:`evaluate_detections` takes them) on the same
    test images; each resample draws the images with replacement (the same draw for both
    detectors) and recomputes every class's area AP and the mAP (over the classes with a
    non-difficult ground truth in the resample). Returns (the difference on the full test
    set, (n_boot,) differences on the resamples); with
    :func:`pipeline.evaluate.bootstrap.percentile_interval` the 95% interval.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot: {n_boot} is not allowed; allowed: >= 1")
    if not len(detections_a) == len(detections_b) == len(ground_truth):
        raise ValueError(
            f"{len(detections_a)} and {len(detections_b)} detection lists for "
            f"{len(ground_truth)} images"
        )
    m = len(ground_truth)
    per = [[class_outcomes(*class_inputs(d, ground_truth, c), iou_threshold)
            for c in range(n_classes)] for d in (detections_a, detections_b)]  # fmt: skip

    def mean_ap_diff(weights: np.ndarray) -> np.ndarray:
        maps = []
        for outcomes in per:
            aps = np.stack([weighted_detection_ap(*o, weights) for o in outcomes], axis=1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # no positive at all
                maps.append(np.nanmean(aps, axis=1))  # (B,)
        return maps[1] - maps[0]

    value = float(mean_ap_diff(np.ones((1, m)))[0])
    rng = np.random.default_rng(seed)
    diffs = np.concatenate([mean_ap_diff(resample_counts(m, min(CHUNK, n_boot - s), rng))
                            for s in range(0, n_boot, CHUNK)])  # fmt: skip
    return value, diffs
