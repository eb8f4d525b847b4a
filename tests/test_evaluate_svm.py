"""The linear-SVM protocol: separable and non-separable toys, difficult labels, C by CV,
each with both solvers; the Newton solver against the LinearSVC reference on
feature-like data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.evaluate.classify import svm
from pipeline.evaluate.classify.svm import (
    SOLVERS,
    choose_cost,
    l2_normalize,
    train_and_test,
    train_multiclass,
)

COSTS = (0.01, 0.1, 1.0, 10.0, 100.0)
both = pytest.mark.parametrize("solver", SOLVERS)


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


@both
def test_separable_problem_reaches_ap_one(solver):
    xtr, ytr, _ = blobs(20, 3, 8, 0.3, seed=0)
    xte, yte, _ = blobs(10, 3, 8, 0.3, seed=1)
    res = train_and_test(xtr, ytr, xte, yte, ("a", "b", "c"), COSTS, folds=3, seed=0, solver=solver)
    assert res.map == pytest.approx(1.0)
    assert res.map_11point == pytest.approx(1.0)
    assert all(r.cv == "kfold(3)" and r.cost in COSTS for r in res.per_class)
    d = res.to_dict()
    assert d["map"] == pytest.approx(1.0) and set(d["per_class"]) == {"a", "b", "c"}


@both
def test_non_separable_problem_is_between_chance_and_one(solver):
    xtr, ytr, _ = blobs(40, 3, 8, 4.0, seed=0)
    xte, yte, _ = blobs(40, 3, 8, 4.0, seed=1)
    res = train_and_test(xtr, ytr, xte, yte, ("a", "b", "c"), COSTS, folds=3, seed=0, solver=solver)
    assert 1 / 3 + 0.05 < res.map < 0.999


@both
def test_difficult_is_negative_in_training_and_ignored_at_test(monkeypatch, solver):
    xtr, ytr, _ = blobs(15, 2, 4, 0.2, seed=0)
    xte, yte, _ = blobs(10, 2, 4, 0.2, seed=1)
    ytr[0, 0] = 0  # a class-0 item marked difficult: must train as a negative
    seen = []  # the training labels of each final fit of class 0
    if solver == "sklearn":
        real_fit = svm._fit

        def spy(clf, x, y, counter):
            seen.append(y.copy())
            return real_fit(clf, x, y, counter)

        monkeypatch.setattr(svm, "_fit", spy)
    else:
        real_newton_fit = svm.NewtonData.fit

        def spy(self, problems, costs, warm):
            seen.append(problems[0].y.copy())
            return real_newton_fit(self, problems, costs, warm)

        monkeypatch.setattr(svm.NewtonData, "fit", spy)
    # at test: a copy of a class-0 item, difficult for class 0; it would rank among the
    # top class-0 scores, so counted as a negative it would be a false positive
    xte = np.concatenate([xte, xte[:1]])
    yte = np.concatenate([yte, [[0, -1]]]).astype(np.int8)
    res = train_and_test(xtr, ytr, xte, yte, ("a", "b"), (1.0,), folds=3, seed=0, solver=solver)
    final_fit_class0 = seen[3] if solver == "sklearn" else seen[0]  # sklearn: 3 CV fits first
    assert final_fit_class0.shape == (30,) and set(np.unique(final_fit_class0)) == {-1, 1}
    assert final_fit_class0[0] == -1
    assert res.per_class[0].n_train_pos == 14 and res.per_class[0].n_test_pos == 10
    assert res.map == pytest.approx(1.0)
    yte[-1, 0] = -1
    res2 = train_and_test(xtr, ytr, xte, yte, ("a", "b"), (1.0,), folds=3, seed=0, solver=solver)
    assert res2.per_class[0].ap < 0.999


@both
def test_cost_chosen_by_cv_from_the_list(solver):
    xtr, ytr, _ = blobs(30, 2, 16, 3.0, seed=2)
    y = ytr[:, 0]
    cost, how, cv_ap = choose_cost(l2_normalize(xtr), y, COSTS, folds=3, seed=0, solver=solver)
    assert how == "kfold(3)" and len(cv_ap) == len(COSTS)
    assert cost in COSTS
    assert cost == COSTS[int(np.argmax(cv_ap))]
    # a single cost is the only choice
    assert choose_cost(l2_normalize(xtr), y, (2.0,), folds=3, seed=0, solver=solver)[0] == 2.0
    # deterministic for a seed
    assert choose_cost(l2_normalize(xtr), y, COSTS, folds=3, seed=0, solver=solver)[2] == cv_ap


@both
def test_cost_ties_go_to_the_smallest(solver):
    # perfectly separable: every cost gets CV AP 1, the first (smallest) is chosen
    xtr, ytr, _ = blobs(12, 2, 4, 0.1, seed=0)
    cost, _, cv_ap = choose_cost(
        l2_normalize(xtr), ytr[:, 0], COSTS, folds=3, seed=0, solver=solver
    )
    assert all(a == pytest.approx(1.0) for a in cv_ap)
    assert cost == COSTS[0]


@both
def test_few_positives_fall_back_and_missing_class_is_nan(solver):
    xtr, ytr, _ = blobs(10, 3, 6, 0.3, seed=0)
    xte, yte, _ = blobs(5, 3, 6, 0.3, seed=1)
    ytr[:, 2] = -1  # class c: no training positive
    ytr[0, 2] = 1  # ... then exactly one
    res = train_and_test(xtr, ytr, xte, yte, ("a", "b", "c"), COSTS, folds=3, seed=0, solver=solver)
    assert res.per_class[2].cv == "fallback" and res.per_class[2].cost == 1.0
    ytr[0, 2] = -1
    res = train_and_test(xtr, ytr, xte, yte, ("a", "b", "c"), COSTS, folds=3, seed=0, solver=solver)
    assert res.per_class[2].cv == "no_positive" and math.isnan(res.per_class[2].ap)
    assert res.to_dict()["classes_without_ap"] == ["c"]
    assert res.map == pytest.approx(np.mean([res.per_class[0].ap, res.per_class[1].ap]))


def test_bad_labels_and_solver_rejected():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="labels"):
        train_and_test(x, np.full((4, 1), 2), x, np.ones((4, 1)), ("a",), COSTS)
    with pytest.raises(ValueError, match=r"solver: 'liblinear'.*allowed: newton, sklearn"):
        train_and_test(x, np.ones((4, 1)), x, np.ones((4, 1)), ("a",), COSTS, solver="liblinear")


@both
def test_multiclass_svm_accuracy(solver):
    xtr, _, ytr = blobs(20, 4, 8, 0.5, seed=0)
    xte, _, yte = blobs(10, 4, 8, 0.5, seed=1)
    res = train_multiclass(xtr, ytr, xte, yte, COSTS, folds=3, seed=0, solver=solver)
    assert res.accuracy == pytest.approx(1.0)
    assert res.cost in COSTS and len(res.cv_accuracy) == len(COSTS)
    xtr, _, ytr = blobs(20, 4, 8, 6.0, seed=0)
    xte, _, yte = blobs(20, 4, 8, 6.0, seed=1)
    res = train_multiclass(xtr, ytr, xte, yte, COSTS, folds=3, seed=0, solver=solver)
    assert 0.25 < res.accuracy < 1.0


@both
def test_workers_do_not_change_the_result(solver):
    xtr, ytr, _ = blobs(15, 2, 8, 3.0, seed=4)
    xte, yte, _ = blobs(15, 2, 8, 3.0, seed=5)
    kw = {"folds": 3, "seed": 0, "solver": solver}
    one = train_and_test(xtr, ytr, xte, yte, ("a", "b"), COSTS, workers=1, threads=1, **kw)
    two = train_and_test(xtr, ytr, xte, yte, ("a", "b"), COSTS, workers=2, threads=2, **kw)
    assert one.to_dict() == two.to_dict()
    assert [r.cv_ap for r in one.per_class] == [r.cv_ap for r in two.per_class]


def feature_like(n_per_class: int, n_classes: int, dim: int, seed: int, signal: float = 0.12):
    """Non-negative (post-ReLU) rows with a large shared mean, low-rank nuisance and weak
    class directions, as CNN features are; labels (N, C) in {1, -1}, a few difficult."""
    rng = np.random.default_rng(seed)
    protos = np.maximum(np.random.default_rng(99).normal(size=(n_classes, dim)), 0)
    nuisance = np.random.default_rng(98).normal(size=(16, dim))
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = 1.0 + signal * protos[y] + 0.15 * rng.normal(size=(len(y), 16)) @ nuisance
    x = np.maximum(x + 0.6 * rng.normal(size=(len(y), dim)), 0)
    labels = -np.ones((len(y), n_classes), dtype=np.int8)
    labels[np.arange(len(y)), y] = np.where(rng.random(len(y)) < 0.03, 0, 1)
    return x, labels, y


def test_newton_equals_the_linearsvc_reference_on_feature_like_data():
    """Same protocol, same folds: per-class APs within 0.1 AP point, the same costs for
    most classes, CV APs close (LinearSVC stops at tol=1e-4, the Newton solver at the
    optimum)."""
    xtr, ytr, _ = feature_like(70, 5, 1280, seed=0)
    xte, yte, _ = feature_like(60, 5, 1280, seed=1)
    classes = tuple("abcde")
    ref = train_and_test(xtr, ytr, xte, yte, classes, COSTS, 3, 0, solver="sklearn")
    new = train_and_test(xtr, ytr, xte, yte, classes, COSTS, 3, 0, solver="newton")
    assert 0.5 < ref.map < 0.99  # neither trivial nor chance: the comparison means something
    for r, n in zip(ref.per_class, new.per_class, strict=True):
        assert abs(n.ap - r.ap) <= 1e-3 and abs(n.ap_11point - r.ap_11point) <= 1e-3
        np.testing.assert_allclose(n.cv_ap, r.cv_ap, atol=5e-3)
    same = sum(r.cost == n.cost for r, n in zip(ref.per_class, new.per_class, strict=True))
    assert same >= 4
    assert abs(new.map - ref.map) <= 1e-3 and new.convergence_warnings == 0


def test_newton_multiclass_equals_the_linearsvc_reference():
    xtr, _, ytr = feature_like(60, 4, 640, seed=2, signal=0.08)
    xte, _, yte = feature_like(50, 4, 640, seed=3, signal=0.08)
    ref = train_multiclass(xtr, ytr, xte, yte, COSTS, 3, 0, solver="sklearn")
    new = train_multiclass(xtr, ytr, xte, yte, COSTS, 3, 0, solver="newton")
    assert 0.4 < ref.accuracy < 0.99
    assert new.cost == ref.cost
    assert abs(new.accuracy - ref.accuracy) <= 0.01
    np.testing.assert_allclose(new.cv_accuracy, ref.cv_accuracy, atol=0.01)
