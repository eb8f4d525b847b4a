"""AP functions against hand-computed cases and scikit-learn where the definitions coincide."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from pipeline.evaluate.ap import ap_11point, ap_area, average_precision, mean_ap, precision_recall


def test_hand_case_both_kinds():
    # ranks: TP, FP, TP, FP -> recall .5 .5 1 1, precision 1 .5 2/3 .5
    scores = [0.9, 0.8, 0.7, 0.6]
    labels = [1, -1, 1, -1]
    rec, prec, n_pos = precision_recall(scores, labels)
    assert n_pos == 2
    np.testing.assert_allclose(rec, [0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(prec, [1.0, 0.5, 2 / 3, 0.5])
    # area: 0.5 * 1 + 0.5 * 2/3
    assert average_precision(scores, labels) == pytest.approx(0.5 + 1 / 3)
    # 11-point: t = 0 .. 0.5 (6 points) -> 1, t = 0.6 .. 1 (5 points) -> 2/3
    assert average_precision(scores, labels, kind="11point") == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_envelope_raises_dip():
    # ranks: FP, TP, FP, TP: precision at the two TPs is 1/2 and 1/2 -> area 0.5;
    # ranks: TP, FP, FP, TP, TP: precision 1, 1/2, 1/3, 1/2, 3/5; the envelope lifts the
    # second and third positives to 3/5 -> area (1 + 3/5 + 3/5) / 3
    assert average_precision([4, 3, 2, 1], [-1, 1, -1, 1]) == pytest.approx(0.5)
    assert average_precision([5, 4, 3, 2, 1], [1, -1, -1, 1, 1]) == pytest.approx(
        (1 + 0.6 + 0.6) / 3
    )


def test_ap_area_and_11point_on_curves():
    assert ap_area([], []) == 0.0
    assert ap_area([1.0], [1.0]) == pytest.approx(1.0)
    assert ap_11point([1.0], [1.0]) == pytest.approx(1.0)
    # recall never above 0.5: 11-point gets 6 of 11 thresholds
    assert ap_11point([0.25, 0.5], [1.0, 1.0]) == pytest.approx(6 / 11)
    assert ap_area([0.25, 0.5], [1.0, 1.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        ap_area([0.1, 0.2], [1.0])


def test_ties_keep_input_order():
    assert average_precision([0.5, 0.5], [1, -1]) == pytest.approx(1.0)
    assert average_precision([0.5, 0.5], [-1, 1]) == pytest.approx(0.5)


def test_no_positive_and_difficult_only_are_nan():
    assert math.isnan(average_precision([0.3, 0.2], [-1, -1]))
    assert math.isnan(average_precision([0.3, 0.2], [0, 0]))
    assert math.isnan(average_precision([0.3, 0.2], [0, -1], kind="11point"))
    assert mean_ap([0.5, float("nan"), 1.0]) == pytest.approx(0.75)
    assert math.isnan(mean_ap([float("nan")]))


def test_difficult_is_ignored_not_negative():
    # a difficult item ranked first would be an FP if counted; ignored, AP is 1
    assert average_precision([0.9, 0.8, 0.1], [0, 1, -1]) == pytest.approx(1.0)
    assert average_precision([0.9, 0.8, 0.1], [-1, 1, -1]) == pytest.approx(0.5)


def test_duplicates_count_each_item():
    # the same score and label twice is two ranked items
    assert average_precision([0.9, 0.9, 0.8, 0.1], [1, 1, -1, 1]) == pytest.approx(
        (1 + 1 + 0.75) / 3
    )


def test_bad_labels_and_kind_rejected():
    with pytest.raises(ValueError, match="labels"):
        average_precision([0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match="kind"):
        average_precision([0.1], [1], kind="voc")


def test_matches_sklearn_where_definitions_coincide():
    """sklearn's AP has no envelope: equal when precision at each positive is already monotone,
    and never above the enveloped AP otherwise."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(5, 40))
        labels = np.where(rng.random(n) < 0.4, 1, -1)
        if not (labels == 1).any():
            labels[0] = 1
        scores = rng.normal(size=n) + labels  # distinct scores (no ties)
        ours = average_precision(scores, labels)
        ref = average_precision_score(labels == 1, scores)
        rec, prec, _ = precision_recall(scores, labels)
        at_pos = prec[np.diff(rec, prepend=0.0) > 0]  # precision at each positive
        if np.all(np.diff(at_pos) <= 1e-12):
            assert ours == pytest.approx(ref)
        else:
            assert ours >= ref - 1e-12
    # perfectly separated: both 1
    assert average_precision([3, 2, 1], [1, 1, -1]) == pytest.approx(1.0)
    assert average_precision_score([1, 1, 0], [3, 2, 1]) == pytest.approx(1.0)
