"""The linear-SVM protocol: separable and non-separable toys, difficult labels, C by CV."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.evaluate import svm
from pipeline.evaluate.svm import choose_cost, l2_normalize, train_and_test, train_multiclass

COSTS = (0.01, 0.1, 1.0, 10.0, 100.0)


def blobs(n_per_class: int, n_classes: int, dim: int, spread: float, seed: int):
    """Gaussian blobs around orthogonal class directions; labels (N, C) in {1, -1}."""
    rng = np.random.default_rng(seed)
    centres = np.eye(n_classes, dim) * 5.0
    x = np.concatenate(
        [centres[c] + spread * rng.normal(size=(n_per_class, dim)) for c in range(n_classes)]
    )
    y = np.repeat(np.arange(n_classes), n_per_class)
    labels = -np.ones((len(y), n_classes), dtype=np.int8)
    labels[np.arange(len(y)), y] = 1
    return x, labels, y


def test_l2_normalize_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]])


def test_separable_problem_reaches_ap_one():
    xtr, ytr, _ = blobs(20, 3, 8, 0.3, seed=0)
    xte, yte, _ = blobs(10, 3, 8, 0.3, seed=1)
    res = train_and_test(xtr, ytr, xte, yte, ("a", "b", "c"), COSTS, folds=3, seed=0)
    assert res.map == pytest.approx(1.0)
    assert res.map_11point == pytest.approx(1.0)
    assert all(r.cv == "kfold(3)" and r.cost in COSTS for r in res.per_class)
    d = res.to_dict()
    assert d["map"] == pytest.approx(1.0) and set(d["per_class"]) == {"a", "b", "c"}


def test_non_separable_problem_is_between_chance_and_one():
    xtr, ytr, _ = blobs(40, 3, 8, 4.0, seed=0)
    xte, yte, _ = blobs(40, 3, 8, 4.0, seed=1)
    res = train_and_test(xtr, ytr, xte, yte, ("a", "b", "c"), COSTS, folds=3, seed=0)
    assert 1 / 3 + 0.05 < res.map < 0.999


def test_difficult_is_negative_in_training_and_ignored_at_test(monkeypatch):
    xtr, ytr, _ = blobs(15, 2, 4, 0.2, seed=0)
    xte, yte, _ = blobs(10, 2, 4, 0.2, seed=1)
    ytr[0, 0] = 0  # a class-0 item marked difficult: must train as a negative
    seen = []
    real_fit = svm._fit

    def spy(clf, x, y, counter):
        seen.append(y.copy())
        return real_fit(clf, x, y, counter)

    monkeypatch.setattr(svm, "_fit", spy)
    # at test: a copy of a class-0 item, difficult for class 0; it would rank among the
    # top class-0 scores, so counted as a negative it would be a false positive
    xte = np.concatenate([xte, xte[:1]])
    yte = np.concatenate([yte, [[0, -1]]]).astype(np.int8)
    res = train_and_test(xtr, ytr, xte, yte, ("a", "b"), (1.0,), folds=3, seed=0)
    final_fit_class0 = seen[3]  # 3 CV fits, then the final fit on all training rows
    assert final_fit_class0.shape == (30,) and set(np.unique(final_fit_class0)) == {-1, 1}
    assert final_fit_class0[0] == -1
    assert res.per_class[0].n_train_pos == 14 and res.per_class[0].n_test_pos == 10
    assert res.map == pytest.approx(1.0)
    yte[-1, 0] = -1
    res2 = train_and_test(xtr, ytr, xte, yte, ("a", "b"), (1.0,), folds=3, seed=0)
    assert res2.per_class[0].ap < 0.999


def test_cost_chosen_by_cv_from_the_list():
    xtr, ytr, _ = blobs(30, 2, 16, 3.0, seed=2)
    y = ytr[:, 0]
    cost, how, cv_ap = choose_cost(l2_normalize(xtr), y, COSTS, folds=3, seed=0)
    assert how == "kfold(3)" and len(cv_ap) == len(COSTS)
    assert cost in COSTS
    assert cost == COSTS[int(np.argmax(cv_ap))]
    # a single cost is the only choice
    assert choose_cost(l2_normalize(xtr), y, (2.0,), folds=3, seed=0)[0] == 2.0
    # deterministic for a seed
    assert choose_cost(l2_normalize(xtr), y, COSTS, folds=3, seed=0)[2] == cv_ap


def test_cost_ties_go_to_the_smallest():
    # perfectly separable: every cost gets CV AP 1, the first (smallest) is chosen
    xtr, ytr, _ = blobs(12, 2, 4, 0.1, seed=0)
    cost, _, cv_ap = choose_cost(l2_normalize(xtr), ytr[:, 0], COSTS, folds=3, seed=0)
    assert all(a == pytest.approx(1.0) for a in cv_ap)
    assert cost == COSTS[0]


def test_few_positives_fall_back_and_missing_class_is_nan():
    xtr, ytr, _ = blobs(10, 3, 6, 0.3, seed=0)
    xte, yte, _ = blobs(5, 3, 6, 0.3, seed=1)
    ytr[:, 2] = -1  # class c: no training positive
    ytr[0, 2] = 1  # ... then exactly one
    res = train_and_test(xtr, ytr, xte, yte, ("a", "b", "c"), COSTS, folds=3, seed=0)
    assert res.per_class[2].cv == "fallback" and res.per_class[2].cost == 1.0
    ytr[0, 2] = -1
    res = train_and_test(xtr, ytr, xte, yte, ("a", "b", "c"), COSTS, folds=3, seed=0)
    assert res.per_class[2].cv == "no_positive" and math.isnan(res.per_class[2].ap)
    assert res.to_dict()["classes_without_ap"] == ["c"]
    assert res.map == pytest.approx(np.mean([res.per_class[0].ap, res.per_class[1].ap]))


def test_bad_labels_rejected():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="labels"):
        train_and_test(x, np.full((4, 1), 2), x, np.ones((4, 1)), ("a",), COSTS)


def test_multiclass_svm_accuracy():
    xtr, _, ytr = blobs(20, 4, 8, 0.5, seed=0)
    xte, _, yte = blobs(10, 4, 8, 0.5, seed=1)
    res = train_multiclass(xtr, ytr, xte, yte, COSTS, folds=3, seed=0)
    assert res.accuracy == pytest.approx(1.0)
    assert res.cost in COSTS and len(res.cv_accuracy) == len(COSTS)
    xtr, _, ytr = blobs(20, 4, 8, 6.0, seed=0)
    xte, _, yte = blobs(20, 4, 8, 6.0, seed=1)
    res = train_multiclass(xtr, ytr, xte, yte, COSTS, folds=3, seed=0)
    assert 0.25 < res.accuracy < 1.0


def test_workers_do_not_change_the_result():
    xtr, ytr, _ = blobs(15, 2, 8, 3.0, seed=4)
    xte, yte, _ = blobs(15, 2, 8, 3.0, seed=5)
    one = train_and_test(xtr, ytr, xte, yte, ("a", "b"), COSTS, folds=3, seed=0, workers=1)
    two = train_and_test(xtr, ytr, xte, yte, ("a", "b"), COSTS, folds=3, seed=0, workers=2)
    assert one.to_dict() == two.to_dict()
    assert [r.cv_ap for r in one.per_class] == [r.cv_ap for r in two.per_class]
