"""VOC detection AP (py-faster-rcnn voc_eval semantics) on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.evaluate.detect.detection_ap import GroundTruth, evaluate_detections, voc_eval_class

A = [0.0, 0.0, 10.0, 10.0]
B = [20.0, 20.0, 40.0, 40.0]
C = [50.0, 0.0, 60.0, 10.0]


def _dets(rows):
    """rows of (box, score, label) -> (boxes, scores, labels) of one image."""
    if not rows:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)
    boxes, scores, labels = zip(*rows, strict=True)
    return np.array(boxes), np.array(scores), np.array(labels)


def test_duplicates_are_false_positives():
    gt = [GroundTruth.make([A, B], [0, 0])]
    dets = [_dets([(A, 0.9, 0), ([0.5, 0, 10, 10], 0.8, 0), (B, 0.7, 0)])]
    r = evaluate_detections(dets, gt, ["x"])["per_class"]["x"]
    # ranks: TP, FP (duplicate of A), TP -> rec .5 .5 1, prec 1 .5 2/3
    assert r["ap"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert r["ap_11point"] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    assert r["n_pos"] == 2 and r["recall"] == 1.0


def test_difficult_is_neither_counted_nor_penalised():
    gt = [GroundTruth.make([A, C], [0, 0], [False, True])]
    dets = [_dets([(C, 0.95, 0), (C, 0.9, 0), (A, 0.5, 0)])]
    r = evaluate_detections(dets, gt, ["x"])["per_class"]["x"]
    assert r["n_pos"] == 1
    assert r["ap"] == pytest.approx(1.0) and r["ap_11point"] == pytest.approx(1.0)
    assert r["n_det"] == 1  # both detections on the difficult box left the ranking
    # the same box not marked difficult: it counts, and its duplicate is a false positive
    gt = [GroundTruth.make([A, C], [0, 0], [False, False])]
    rec, prec, n_pos = voc_eval_class(
        np.zeros(3, int), np.array([0.95, 0.9, 0.5]), np.array([C, C, A]), [gt[0].boxes],
        [gt[0].difficult],
    )  # fmt: skip
    assert n_pos == 2
    np.testing.assert_allclose(rec, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(prec, [1.0, 0.5, 2 / 3])


def test_iou_must_exceed_half_and_class_and_image_must_match():
    gt = [GroundTruth.make([A], [0]), GroundTruth.make([B], [1])]
    half = [0.0, 0.0, 10.0, 5.0]  # IoU with A exactly 0.5: not a match
    dets = [_dets([(half, 0.9, 0), (A, 0.3, 1)]), _dets([(A, 0.8, 0)])]
    res = evaluate_detections(dets, gt, ["x", "y"])
    assert res["per_class"]["x"]["ap"] == 0.0  # a miss, and a box in an image without x
    assert res["per_class"]["y"]["ap"] == 0.0  # right box, wrong class, in the wrong image
    dets = [_dets([([0.0, 0.0, 10.0, 5.1], 0.9, 0)]), _dets([(B, 0.1, 1)])]
    res = evaluate_detections(dets, gt, ["x", "y"])
    assert res["per_class"]["x"]["ap"] == 1.0 and res["map"] == 1.0


def test_no_positives_and_difficult_only_are_nan_and_left_out_of_the_mean():
    gt = [GroundTruth.make([A, B], [0, 2], [False, True])]
    dets = [_dets([(A, 0.9, 0), (B, 0.9, 2), (C, 0.9, 1)])]
    res = evaluate_detections(dets, gt, ["x", "y", "z"])
    assert res["per_class"]["x"]["ap"] == 1.0
    assert math.isnan(res["per_class"]["y"]["ap"])  # no ground truth at all
    assert math.isnan(res["per_class"]["z"]["ap"])  # difficult only
    assert res["classes_without_positives"] == ["y", "z"]
    assert res["map"] == 1.0 and res["map_11point"] == 1.0


def test_ranking_by_score_across_images_and_stable_ties():
    gt = [GroundTruth.make([A], [0]), GroundTruth.make([B], [0])]
    # image 1's false positive outranks image 0's true positive
    dets = [_dets([(A, 0.5, 0)]), _dets([(C, 0.6, 0), (B, 0.4, 0)])]
    r = evaluate_detections(dets, gt, ["x"])["per_class"]["x"]
    # ranks: FP, TP, TP -> rec 0 .5 1, prec 0 .5 2/3; envelope 2/3 everywhere
    assert r["ap"] == pytest.approx(2 / 3)
    # tied scores keep input order (image 0 first): TP then FP
    _, prec, _ = voc_eval_class(
        np.array([0, 1]), np.array([0.5, 0.5]), np.array([A, C]), [np.array([A]), np.zeros((0, 4))],
        [np.zeros(1, bool), np.zeros(0, bool)],
    )  # fmt: skip
    np.testing.assert_allclose(prec, [1.0, 0.5])


def test_matches_sklearn_when_each_object_is_detected_once():
    """With one detection per object (no duplicates, no misses) and all boxes exact, the
    ranking problem is a classification one; the area AP equals VOC's interpolated AP."""
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    n = 30
    boxes = [[10.0 * k, 0.0, 10.0 * k + 8, 8.0] for k in range(n)]
    is_obj = rng.random(n) < 0.5
    scores = rng.random(n)
    gt = [GroundTruth.make(np.array(boxes)[is_obj], np.zeros(int(is_obj.sum()), int))]
    dets = [(np.array(boxes), scores, np.zeros(n, int))]
    r = evaluate_detections(dets, gt, ["x"])["per_class"]["x"]
    # sklearn's AP is the non-interpolated sum; VOC's envelope is >= it
    sk = average_precision_score(is_obj, scores)
    assert r["ap"] >= sk - 1e-12
    # identical where the precision at each hit is not exceeded later (envelope = curve):
    # hits by rank 1, 1, 0, 1, 0, 0, ... -> (1/3)(1 + 1 + 3/4)
    order = np.argsort(-scores)
    mono = np.zeros(n, bool)
    mono[order[[0, 1, 3]]] = True
    gt = [GroundTruth.make(np.array(boxes)[mono], np.zeros(3, int))]
    r = evaluate_detections(dets, gt, ["x"])["per_class"]["x"]
    assert r["ap"] == pytest.approx(average_precision_score(mono, scores))
    assert r["ap"] == pytest.approx((1 + 1 + 0.75) / 3)


def _random_detection_set(seed: int, n_images: int = 12, n_classes: int = 3):
    """Ground truth with some difficult boxes, and two detectors: near-true boxes with noisy
    scores plus random false positives (every score distinct)."""
    rng = np.random.default_rng(seed)
    gts, dets = [], ([], [])
    for _ in range(n_images):
        g = int(rng.integers(0, 4))
        xy = rng.uniform(0, 80, (g, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 30, (g, 2))], axis=1)
        labels = rng.integers(0, n_classes, g)
        gts.append(GroundTruth.make(boxes, labels, rng.random(g) < 0.15))
        for d in dets:
            keep = rng.random(g) < 0.8
            true = boxes[keep] + rng.normal(0, 2, (int(keep.sum()), 4))
            f = int(rng.integers(0, 3))
            fxy = rng.uniform(0, 80, (f, 2))
            false = np.concatenate([fxy, fxy + 15], axis=1)
            d.append((np.concatenate([true, false]),
                      np.concatenate([rng.uniform(0.3, 1, len(true)), rng.uniform(0, 0.7, f)]),
                      np.concatenate([labels[keep], rng.integers(0, n_classes, f)])))  # fmt: skip
    return gts, dets


def test_detection_bootstrap_equals_the_expanded_resamples():
    from pipeline.evaluate.bootstrap import resample_counts
    from pipeline.evaluate.detect.detection_ap import detection_bootstrap

    gts, (a, b) = _random_detection_set(0)
    classes = ["x", "y", "z"]
    value, diffs = detection_bootstrap(a, b, gts, 3, n_boot=25, seed=7)
    full = evaluate_detections(b, gts, classes)["map"] - evaluate_detections(a, gts, classes)["map"]
    assert value == pytest.approx(full, abs=1e-12)
    counts = resample_counts(len(gts), 25, np.random.default_rng(7))  # the same draws
    for r in range(25):
        idx = np.repeat(np.arange(len(gts)), counts[r].astype(int))  # the expanded resample
        exp_gt = [gts[i] for i in idx]
        m_a = evaluate_detections([a[i] for i in idx], exp_gt, classes)["map"]
        m_b = evaluate_detections([b[i] for i in idx], exp_gt, classes)["map"]
        assert diffs[r] == pytest.approx(m_b - m_a, abs=1e-12)
    # the same detector twice: exactly zero on every resample
    _, same = detection_bootstrap(a, a, gts, 3, n_boot=10, seed=0)
    assert np.all(same == 0)
    with pytest.raises(ValueError, match="detection lists"):
        detection_bootstrap(a, b[:-1], gts, 3, n_boot=5, seed=0)
