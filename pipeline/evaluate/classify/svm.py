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

Two solvers compute this (``solver``): ``newton`` (default), the batched exact Newton
solver of :mod:`pipeline.evaluate.classify.l2svm` (the same optimisation problem as
``LinearSVC``, solved to a tighter tolerance: every class and fold of one training set in
one batch sharing one Gram matrix, warm-started along the cost list, in torch on
``device``), and ``sklearn``, ``LinearSVC`` itself, the reference.
``tests/test_evaluate_svm.py`` checks that their APs agree within 0.1 AP point;
``bench/bench_classify.py`` times them (BENCHMARKS.md).

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
import torch
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC
from tqdm import tqdm

from pipeline.evaluate.ap import average_precision, mean_ap
from pipeline.evaluate.classify import l2svm

log = logging.getLogger(__name__)

CLASS_WEIGHT = {1: 2, -1: 1}
MAX_ITER = 2000
SOLVERS = ("newton", "sklearn")


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


def check_solver(solver: str) -> None:
    if solver not in SOLVERS:
        raise ValueError(f"solver: {solver!r} is not valid; allowed: {', '.join(SOLVERS)}")


@dataclass
class _Problem:
    """One binary problem of a Newton batch: labels (N,) in {1, -1}, row weights (N,),
    its training rows (None: all)."""

    y: np.ndarray
    weight: np.ndarray
    rows: np.ndarray | None = None


class NewtonData:
    """One training set for the Newton solver: its augmented rows, Gram matrix and Nystrom
    preconditioner on ``device``, shared by every problem (class, fold, cost) fitted on it.
    Counts the problems that hit the solver's step limit."""

    def __init__(self, x: np.ndarray, device: torch.device | str | None = None):
        self.device = torch.device(device if device is not None else "cpu")
        self.x = l2svm.augment(x, self.device)  # (N, D + 1)
        self.g = l2svm.gram(self.x)  # (N, N)
        self.basis = l2svm.nystrom(self.g)
        self.not_converged = 0

    def subset(self, rows: np.ndarray) -> NewtonData:
        """The same data restricted to ``rows`` (sub-blocks; nothing recomputed)."""
        sub = object.__new__(NewtonData)
        r = torch.as_tensor(rows, device=self.device)
        sub.device, sub.x, sub.not_converged = self.device, self.x[r], 0
        sub.g = self.g[r][:, r]
        sub.basis = None
        if self.basis is not None and len(rows) > 2 * self.basis.z.shape[1]:  # else: no gain
            sub.basis = l2svm.Basis(self.basis.z[r], self.basis.residual)
        return sub

    def _batch(self, problems: Sequence[_Problem]) -> tuple[torch.Tensor, torch.Tensor]:
        y = np.stack([p.y for p in problems]).astype(np.float64)  # (B, N)
        w = np.zeros_like(y)  # (B, N): zero off each problem's training rows
        for b, p in enumerate(problems):
            rows = slice(None) if p.rows is None else p.rows
            w[b, rows] = p.weight[rows]
        t = lambda a: torch.as_tensor(a, dtype=l2svm.DTYPE, device=self.device)  # noqa: E731
        return t(y), t(w)

    def path(self, problems: Sequence[_Problem], costs: Sequence[float]) -> list[l2svm.Solution]:
        """The batch solved for every cost (one Solution per cost, in the given order)."""
        y, w = self._batch(problems)
        sols = l2svm.solve_path(self.g, self.basis, y, w, costs)
        self.not_converged += sum(int((~s.converged).sum()) for s in sols)
        return sols

    def fit(
        self,
        problems: Sequence[_Problem],
        costs: Sequence[float],
        warm: Sequence[Sequence[tuple[l2svm.Solution, int]]],
    ) -> l2svm.Solution:
        """The batch solved at one cost per problem, each started from the mean of its
        ``warm`` (solution, row) pairs (the CV folds' solutions at that cost), or w = 0."""
        y, w = self._batch(problems)
        cost = torch.as_tensor(costs, dtype=l2svm.DTYPE, device=self.device)[:, None] * w
        beta, out = torch.zeros_like(y), torch.zeros_like(y)
        for b, parts in enumerate(warm):
            if parts:
                beta[b] = torch.stack([s.beta[r] for s, r in parts]).mean(dim=0)
                out[b] = torch.stack([s.outputs[r] for s, r in parts]).mean(dim=0)
        start = l2svm.Solution(beta, out, torch.zeros(0), torch.zeros(0))
        sol = l2svm.solve(self.g, self.basis, y, cost, start)
        self.not_converged += int((~sol.converged).sum())
        return sol

    def decision(self, sol: l2svm.Solution, x: np.ndarray) -> np.ndarray:
        """(M, B) decision values of new (L2-normalised) rows ``x``."""
        xa = l2svm.augment(x, self.device)  # (M, D + 1)
        return (xa @ sol.weights(self.x).T).cpu().numpy()


def _binary_weight(y: np.ndarray) -> np.ndarray:
    return np.where(y == 1, float(CLASS_WEIGHT[1]), float(CLASS_WEIGHT[-1]))


def _folds(y: np.ndarray, k: int, seed: int) -> list:
    """The protocol's CV splits (what :func:`choose_cost` uses for either solver)."""
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros((len(y), 1)), y))


def _newton_choose_costs(
    data: NewtonData,
    ys: Sequence[np.ndarray | None],
    costs: Sequence[float],
    folds: int,
    seed: int,
    rows: Sequence[np.ndarray | None] | None = None,
) -> list[tuple[float, str, list[float], list] | None]:
    """:func:`choose_cost` for several binary problems at once (None: skipped), their
    (class, fold) CV fits in one Newton batch; problem j trains on ``rows[j]`` (None: all
    rows). Also returns, per problem, the (solution, row) warm starts of its final fit."""
    out: list = [None] * len(ys)
    problems: list[_Problem] = []
    owners: list[tuple[int, np.ndarray]] = []  # (problem index, validation rows) per row
    plans: dict[int, int] = {}  # problem -> number of folds
    for j, y in enumerate(ys):
        if y is None:
            continue
        sub = np.arange(len(y)) if rows is None or rows[j] is None else rows[j]
        k = min(folds, int((y[sub] == 1).sum()), int((y[sub] == -1).sum()))
        if k < 2:
            out[j] = (_fallback_cost(costs), "fallback", [], [])
            continue
        plans[j] = k
        for tr, va in _folds(y[sub], k, seed):
            problems.append(_Problem(y, _binary_weight(y), sub[tr]))
            owners.append((j, sub[va]))
    if not problems:
        return out
    sols = data.path(problems, costs)
    outputs = [s.outputs.cpu().numpy() for s in sols]  # per cost (B, N)
    scores: dict[int, np.ndarray] = {j: np.full((len(costs), 0), np.nan) for j in plans}
    rows: dict[int, list[int]] = {j: [] for j in plans}
    for b, (j, va) in enumerate(owners):
        ap = [[average_precision(o[b, va], ys[j][va])] for o in outputs]  # (costs, 1)
        scores[j] = np.concatenate([scores[j], np.array(ap)], axis=1)
        rows[j].append(b)
    for j, k in plans.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-nan: no positive in a fold
            cv = [float(v) for v in np.nanmean(scores[j], axis=1)]
        if np.all(np.isnan(cv)):
            out[j] = (_fallback_cost(costs), "fallback", cv, [])
            continue
        best = int(np.nanargmax(cv))  # first maximum: the smallest of tied costs
        out[j] = (float(costs[best]), f"kfold({k})", cv, [(sols[best], b) for b in rows[j]])
    return out


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
    """Per-class results and the means over classes with a defined AP; ``scores`` (M, C)
    are the test decision values (nan for a class without an SVM), which the bootstrap
    of :mod:`pipeline.evaluate.bootstrap` resamples (not part of :meth:`to_dict`)."""

    classes: tuple[str, ...]
    per_class: list[ClassResult]
    convergence_warnings: int = 0
    scores: np.ndarray | None = None

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
    solver: str = "newton",
    device: torch.device | str | None = None,
    threads: int = 0,
) -> tuple[float, str, list[float]]:
    """Pick C for one binary problem (y in {1, -1}, rows already L2-normalised).

    Returns (cost, how, mean CV AP per cost). ``how`` is ``kfold(k)`` or ``fallback``.
    """
    check_solver(solver)
    counter = counter if counter is not None else [0]
    if solver == "newton":
        data = NewtonData(x, device)
        with l2svm.torch_threads(threads):
            cost, how, cv_ap, _ = _newton_choose_costs(data, [y], costs, folds, seed)[0]
        counter[0] += data.not_converged
        return cost, how, cv_ap
    n_pos, n_neg = int((y == 1).sum()), int((y == -1).sum())
    k = min(folds, n_pos, n_neg)
    if k < 2:
        return _fallback_cost(costs), "fallback", []
    splits = _folds(y, k, seed)
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
    solver: str = "newton",
    device: torch.device | str | None = None,
    threads: int = 0,
    train_mask: np.ndarray | None = None,
    newton: NewtonData | None = None,
) -> SVMResult:
    """Run the protocol: per class, choose C by CV on train, fit on all train, AP on test.

    ``train_labels`` / ``test_labels`` are (N, n_classes) in {1, -1, 0}. Features are
    L2-normalised here. ``solver``: ``newton`` (on ``device``, ``threads`` torch CPU
    threads, 0: unchanged) or ``sklearn`` (``LinearSVC``, its CV on ``workers`` processes).
    ``train_mask`` (N, n_classes) bool: the training rows of each class (None: all; the
    low-shot samples of :mod:`pipeline.evaluate.classify.lowshot`). ``newton``: the Newton solver's
    data of ``train_x``, when the caller reuses it across calls on the same rows.
    """
    check_solver(solver)
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
    if train_mask is not None and np.shape(train_mask) != ytr_all.shape:
        raise ValueError(f"train_mask {np.shape(train_mask)} must be (N, C) = {ytr_all.shape}")
    counter = [0]
    results = []
    ys: list[np.ndarray | None] = []
    rows: list[np.ndarray | None] = []
    for c, name in enumerate(classes):
        ytr = np.where(ytr_all[:, c] == 1, 1, -1)  # difficult (0) -> negative in training
        rows.append(None if train_mask is None else np.flatnonzero(train_mask[:, c]))
        n_rows = len(ytr) if rows[c] is None else len(rows[c])
        n_pos = int((ytr[rows[c] if rows[c] is not None else slice(None)] == 1).sum())
        res = ClassResult(cost=None, cv="no_positive", n_train_pos=n_pos)
        res.n_test_pos = int((yte_all[:, c] == 1).sum())
        results.append(res)
        if n_pos == 0 or n_pos == n_rows:
            log.warning(
                "%s: class %s has %d of %d training positives; no SVM", desc, name, n_pos, n_rows
            )
            ys.append(None)
        else:
            ys.append(ytr)
    fitted = [c for c, y in enumerate(ys) if y is not None]
    scores: dict[int, np.ndarray] = {}
    if solver == "newton" and fitted:
        data = newton if newton is not None else NewtonData(xtr, device)
        before = data.not_converged
        with l2svm.torch_threads(threads):
            chosen = _newton_choose_costs(data, ys, costs, folds, seed, rows)
            for c in fitted:
                results[c].cost, results[c].cv, results[c].cv_ap, _ = chosen[c]
            final = data.fit(
                [_Problem(ys[c], _binary_weight(ys[c]), rows[c]) for c in fitted],
                [results[c].cost for c in fitted],
                [chosen[c][3] for c in fitted],
            )
            decisions = data.decision(final, xte)  # (M, fitted)
        scores = {c: decisions[:, b] for b, c in enumerate(fitted)}
        counter[0] += data.not_converged - before
    elif solver == "sklearn":
        for c in tqdm(fitted, desc=desc, leave=False):
            res, ytr = results[c], ys[c]
            sub = slice(None) if rows[c] is None else rows[c]
            res.cost, res.cv, res.cv_ap = choose_cost(
                xtr[sub], ytr[sub], costs, folds, seed, counter, workers, solver="sklearn"
            )
            clf = _fit(make_svc(res.cost, seed), xtr[sub], ytr[sub], counter)
            scores[c] = clf.decision_function(xte)
    for c in fitted:
        res, yte = results[c], yte_all[:, c]  # difficult (0) -> ignored by average_precision
        res.ap = average_precision(scores[c], yte, kind="area")
        res.ap_11point = average_precision(scores[c], yte, kind="11point")
        log.debug("%s %s: C=%g (%s) AP=%.4f", desc, classes[c], res.cost, res.cv, res.ap)
    if counter[0]:
        limit = MAX_ITER if solver == "sklearn" else l2svm.MAX_ITER
        log.info("%s: %d %s fits hit max_iter=%d", desc, counter[0], solver, limit)
    test_scores = np.full((len(xte), len(classes)), np.nan)  # (M, C)
    for c in fitted:
        test_scores[:, c] = scores[c]
    return SVMResult(classes, results, counter[0], test_scores)


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


def _newton_multiclass(
    data: NewtonData,
    ytr: np.ndarray,
    labels: np.ndarray,
    xte: np.ndarray,
    costs: Sequence[float],
    splits: list,
) -> tuple[float, list[float], np.ndarray]:
    """One-vs-rest with the Newton solver: every (class, fold) of the CV in one batch, C by
    CV accuracy of the argmax of the per-class decisions (as ``LinearSVC`` predicts); then
    the final per-class fits, warm-started from their folds. (cost, CV accuracy, test
    predictions)."""
    problems, owners = [], []
    for f, (tr, _) in enumerate(splits):
        present = set(np.unique(ytr[tr]).tolist())
        for k, label in enumerate(labels):
            if label in present:  # a class absent from a fold's training rows: never predicted
                yk = np.where(ytr == label, 1, -1)
                problems.append(_Problem(yk, np.ones(len(ytr)), tr))
                owners.append((f, k))
    cv_acc: list[float] = []
    warm: list[list] = [[] for _ in labels]
    if splits:
        sols = data.path(problems, costs)
        acc = np.zeros((len(costs), len(splits)))
        for i, sol in enumerate(sols):
            out = sol.outputs.cpu().numpy()  # (B, N)
            for f, (_, va) in enumerate(splits):
                dec = np.full((len(labels), len(va)), -np.inf)  # (classes, M)
                for b, (fb, k) in enumerate(owners):
                    if fb == f:
                        dec[k] = out[b, va]
                acc[i, f] = float(np.mean(labels[np.argmax(dec, axis=0)] == ytr[va]))
        cv_acc = [float(v) for v in acc.mean(axis=1)]
        best = int(np.argmax(cv_acc))
        cost = float(costs[best])
        for b, (_, k) in enumerate(owners):
            warm[k].append((sols[best], b))
    else:
        cost = _fallback_cost(costs)
    final = data.fit(
        [_Problem(np.where(ytr == label, 1, -1), np.ones(len(ytr))) for label in labels],
        [cost] * len(labels),
        warm,
    )
    pred = labels[np.argmax(data.decision(final, xte), axis=1)] if len(xte) else labels[:0]
    return cost, cv_acc, pred


def train_multiclass(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    costs: Sequence[float],
    folds: int = 3,
    seed: int = 0,
    workers: int = 1,
    solver: str = "newton",
    device: torch.device | str | None = None,
    threads: int = 0,
) -> MulticlassResult:
    """Multi-class linear SVM (one-vs-rest LinearSVC), C by CV accuracy; test accuracy.

    ``train_y`` / ``test_y`` are integer class indices. Rows are L2-normalised here.
    ``solver``, ``device``, ``workers`` and ``threads`` as in :func:`train_and_test`.
    """
    check_solver(solver)
    xtr, xte = l2_normalize(train_x), l2_normalize(test_x)  # (N, D), (M, D)
    ytr, yte = np.asarray(train_y), np.asarray(test_y)
    counter = [0]
    labels, counts = np.unique(ytr, return_counts=True)
    if len(counts) < 2:
        raise ValueError(f"train_multiclass: needs at least 2 classes, got {len(counts)}")
    # classes rarer than the folds are missing from some folds (sklearn warns); the CV
    # still ranks the costs
    k = min(folds, int(counts.max()))
    splits = []
    if k >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            splits = _folds(ytr, k, seed)
    if solver == "newton":
        data = NewtonData(xtr, device)
        with l2svm.torch_threads(threads):
            cost, cv_acc, pred = _newton_multiclass(data, ytr, labels, xte, costs, splits)
        counter[0] += data.not_converged
    else:
        cv_acc = []
        if splits:
            cv_acc = _cv_grid(xtr, ytr, costs, splits, seed, workers, counter, multiclass=True)
            cost = float(costs[int(np.argmax(cv_acc))])
        else:
            cost = _fallback_cost(costs)
        clf = _fit(make_svc(cost, seed, class_weight=None), xtr, ytr, counter)
        pred = clf.predict(xte) if len(yte) else yte
    acc = float((pred == yte).mean()) if len(yte) else float("nan")
    return MulticlassResult(cost, cv_acc, acc, len(ytr), len(yte))
