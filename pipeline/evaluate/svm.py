"""The linear-SVM protocol on frozen features (VISSL's VOC07 benchmark).

REFERENCE.md section 4, as VISSL's ``SVMTrainer`` does it:

- every feature row is L2-normalised;
- one ``sklearn.svm.LinearSVC`` per class: squared hinge loss, L2 penalty, dual
  coordinate descent, ``class_weight={1: 2, -1: 1}``, ``intercept_scaling=1``,
  ``tol=1e-4``, ``max_iter=2000``;
- the cost C is chosen per class by k-fold (3) cross-validated AP over a cost list
  (VISSL: 0.01 ... 1000); ties go to the first (smallest) cost of the list;
- labels are 1 / -1 / 0 (0 = difficult): 0 counts as a negative in training and
  cross-validation and is left out at test;
- the test AP of each class is the area AP (VOC2010+) and the 11-point AP (VOC2007);
  mAP is the mean over classes with a defined AP.

Departures from VISSL, both for determinism and documented here: the folds are
``StratifiedKFold(shuffle=True, random_state=seed)`` (VISSL: unshuffled), the dual
solver is seeded (``random_state=seed``), and the cross-validated AP is this project's
area AP (:mod:`pipeline.evaluate.ap`) rather than scikit-learn's uninterpolated one. A
class with fewer training positives than folds is cross-validated with as many folds as
it has positives (at least 2); with fewer than 2 positives no CV is possible and the
cost nearest 1 is used (``cv="fallback"`` in the result). A class with no training
positive gets no classifier and a ``nan`` AP.

:func:`train_multiclass` is the multi-class variant used by the contextual
classification (paper Table 1): one-vs-rest ``LinearSVC`` with the same settings, no
class weights, C chosen by cross-validated accuracy.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC
from tqdm import tqdm

from pipeline.evaluate.ap import average_precision, mean_ap

log = logging.getLogger(__name__)

CLASS_WEIGHT = {1: 2, -1: 1}
MAX_ITER = 2000


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (N, 1)
    return x / np.maximum(norms, eps)


def make_svc(cost: float, seed: int, class_weight: dict | None = CLASS_WEIGHT) -> LinearSVC:
    """The protocol's LinearSVC for one cost."""
    return LinearSVC(
        C=cost,
        class_weight=class_weight,
        intercept_scaling=1.0,
        penalty="l2",
        loss="squared_hinge",
        dual=True,
        tol=1e-4,
        max_iter=MAX_ITER,
        random_state=seed,
    )


def _fit(clf: LinearSVC, x: np.ndarray, y: np.ndarray, counter: list[int]) -> LinearSVC:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(x, y)
    counter[0] += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return clf


def _cv_score(
    x: np.ndarray,
    y: np.ndarray,
    cost: float,
    seed: int,
    tr: np.ndarray,
    va: np.ndarray,
    multiclass: bool,
) -> tuple[float, int]:
    """One (cost, fold) of the cross-validation: (AP or accuracy on the fold, warnings)."""
    counter = [0]
    clf = _fit(make_svc(cost, seed, None if multiclass else CLASS_WEIGHT), x[tr], y[tr], counter)
    if multiclass:
        return float((clf.predict(x[va]) == y[va]).mean()), counter[0]
    return average_precision(clf.decision_function(x[va]), y[va]), counter[0]


def _cv_grid(
    x: np.ndarray,
    y: np.ndarray,
    costs: Sequence[float],
    splits: list,
    seed: int,
    workers: int,
    counter: list[int],
    multiclass: bool = False,
) -> list[float]:
    """Mean CV score per cost; (cost, fold) jobs run on ``workers`` processes (same result)."""
    jobs = [(cost, tr, va) for cost in costs for tr, va in splits]
    if workers > 1:
        out = Parallel(n_jobs=workers)(
            delayed(_cv_score)(x, y, c, seed, tr, va, multiclass) for c, tr, va in jobs
        )
    else:
        out = [_cv_score(x, y, c, seed, tr, va, multiclass) for c, tr, va in jobs]
    counter[0] += sum(w for _, w in out)
    scores = np.array([s for s, _ in out], dtype=np.float64).reshape(len(costs), len(splits))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan rows: no positive in a fold
        return [float(v) for v in np.nanmean(scores, axis=1)]


def _fallback_cost(costs: Sequence[float]) -> float:
    return float(min(costs, key=lambda c: (abs(np.log10(c)), c)))


@dataclass
class ClassResult:
    """One class: chosen cost, its CV AP per cost, and test APs."""

    cost: float | None
    cv: str  # "kfold(k)" | "fallback" | "no_positive"
    cv_ap: list[float] = field(default_factory=list)
    ap: float = float("nan")
    ap_11point: float = float("nan")
    n_train_pos: int = 0
    n_test_pos: int = 0


@dataclass
class SVMResult:
    """Per-class results and the means over classes with a defined AP."""

    classes: tuple[str, ...]
    per_class: list[ClassResult]
    convergence_warnings: int = 0

    @property
    def map(self) -> float:
        return mean_ap(r.ap for r in self.per_class)

    @property
    def map_11point(self) -> float:
        return mean_ap(r.ap_11point for r in self.per_class)

    def to_dict(self) -> dict:
        def num(v: float | None):
            return None if v is None or np.isnan(v) else round(float(v), 6)

        return {
            "map": num(self.map),
            "map_11point": num(self.map_11point),
            "convergence_warnings": self.convergence_warnings,
            "classes_without_ap": [
                c for c, r in zip(self.classes, self.per_class, strict=True) if np.isnan(r.ap)
            ],
            "per_class": {
                c: {
                    "ap": num(r.ap),
                    "ap_11point": num(r.ap_11point),
                    "cost": r.cost,
                    "cv": r.cv,
                    "n_train_pos": r.n_train_pos,
                    "n_test_pos": r.n_test_pos,
                }
                for c, r in zip(self.classes, self.per_class, strict=True)
            },
        }


def _check_labels(labels: np.ndarray, n: int, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] != n:
        raise ValueError(f"{what}: labels {labels.shape} must be (N={n}, n_classes)")
    bad = ~np.isin(labels, (1, -1, 0))
    if bad.any():
        raise ValueError(
            f"{what}: labels must be 1, -1 or 0; got {np.unique(labels[bad]).tolist()}"
        )
    return labels.astype(np.int8)


def choose_cost(
    x: np.ndarray,
    y: np.ndarray,
    costs: Sequence[float],
    folds: int,
    seed: int,
    counter: list[int] | None = None,
    workers: int = 1,
) -> tuple[float, str, list[float]]:
    """Pick C for one binary problem (y in {1, -1}, rows already L2-normalised).

    Returns (cost, how, mean CV AP per cost). ``how`` is ``kfold(k)`` or ``fallback``.
    """
    counter = counter if counter is not None else [0]
    n_pos, n_neg = int((y == 1).sum()), int((y == -1).sum())
    k = min(folds, n_pos, n_neg)
    if k < 2:
        return _fallback_cost(costs), "fallback", []
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    splits = list(splitter.split(x, y))
    cv_ap = _cv_grid(x, y, costs, splits, seed, workers, counter)
    if np.all(np.isnan(cv_ap)):
        return _fallback_cost(costs), "fallback", cv_ap
    best = int(np.nanargmax(cv_ap))  # first maximum: the smallest of tied costs
    return float(costs[best]), f"kfold({k})", cv_ap


def train_and_test(
    train_x: np.ndarray,
    train_labels: np.ndarray,
    test_x: np.ndarray,
    test_labels: np.ndarray,
    classes: Sequence[str],
    costs: Sequence[float],
    folds: int = 3,
    seed: int = 0,
    desc: str = "svm",
    workers: int = 1,
) -> SVMResult:
    """Run the protocol: per class, choose C by CV on train, fit on all train, AP on test.

    ``train_labels`` / ``test_labels`` are (N, n_classes) in {1, -1, 0}. Features are
    L2-normalised here.
    """
    classes = tuple(classes)
    if not costs:
        raise ValueError("costs: the cost list is empty")
    xtr = l2_normalize(train_x)  # (N, D)
    xte = l2_normalize(test_x)  # (M, D)
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"train features are {xtr.shape[1]}-d but test features {xte.shape[1]}-d")
    ytr_all = _check_labels(train_labels, len(xtr), "train")
    yte_all = _check_labels(test_labels, len(xte), "test")
    if ytr_all.shape[1] != len(classes) or yte_all.shape[1] != len(classes):
        raise ValueError(f"labels have {ytr_all.shape[1]} columns for {len(classes)} classes")
    counter = [0]
    results = []
    for c, name in enumerate(tqdm(classes, desc=desc, leave=False)):
        ytr = np.where(ytr_all[:, c] == 1, 1, -1)  # difficult (0) -> negative in training
        yte = yte_all[:, c]  # difficult (0) -> ignored by average_precision
        n_pos = int((ytr == 1).sum())
        res = ClassResult(cost=None, cv="no_positive", n_train_pos=n_pos)
        res.n_test_pos = int((yte == 1).sum())
        if n_pos == 0 or n_pos == len(ytr):
            log.warning(
                "%s: class %s has %d of %d training positives; no SVM", desc, name, n_pos, len(ytr)
            )
            results.append(res)
            continue
        res.cost, res.cv, res.cv_ap = choose_cost(xtr, ytr, costs, folds, seed, counter, workers)
        clf = _fit(make_svc(res.cost, seed), xtr, ytr, counter)
        scores = clf.decision_function(xte)  # (M,)
        res.ap = average_precision(scores, yte, kind="area")
        res.ap_11point = average_precision(scores, yte, kind="11point")
        log.debug("%s %s: C=%g (%s) AP=%.4f", desc, name, res.cost, res.cv, res.ap)
        results.append(res)
    if counter[0]:
        log.info("%s: %d LinearSVC fits hit max_iter=%d", desc, counter[0], MAX_ITER)
    return SVMResult(classes, results, counter[0])


@dataclass
class MulticlassResult:
    cost: float
    cv_accuracy: list[float]
    accuracy: float
    n_train: int
    n_test: int

    def to_dict(self) -> dict:
        return {
            "accuracy": round(self.accuracy, 6),
            "cost": self.cost,
            "cv_accuracy": [round(a, 6) for a in self.cv_accuracy],
            "n_train": self.n_train,
            "n_test": self.n_test,
        }


def train_multiclass(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    costs: Sequence[float],
    folds: int = 3,
    seed: int = 0,
    workers: int = 1,
) -> MulticlassResult:
    """Multi-class linear SVM (one-vs-rest LinearSVC), C by CV accuracy; test accuracy.

    ``train_y`` / ``test_y`` are integer class indices. Rows are L2-normalised here.
    """
    xtr, xte = l2_normalize(train_x), l2_normalize(test_x)  # (N, D), (M, D)
    ytr, yte = np.asarray(train_y), np.asarray(test_y)
    counter = [0]
    _, counts = np.unique(ytr, return_counts=True)
    if len(counts) < 2:
        raise ValueError(f"train_multiclass: needs at least 2 classes, got {len(counts)}")
    # classes rarer than the folds are missing from some folds (sklearn warns); the CV
    # still ranks the costs
    k = min(folds, int(counts.max()))
    cv_acc: list[float] = []
    if k >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
            splits = list(splitter.split(xtr, ytr))
        cv_acc = _cv_grid(xtr, ytr, costs, splits, seed, workers, counter, multiclass=True)
        cost = float(costs[int(np.argmax(cv_acc))])
    else:
        cost = _fallback_cost(costs)
    clf = _fit(make_svc(cost, seed, class_weight=None), xtr, ytr, counter)
    acc = float((clf.predict(xte) == yte).mean()) if len(yte) else float("nan")
    return MulticlassResult(cost, cv_acc, acc, len(ytr), len(yte))
