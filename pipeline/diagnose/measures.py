"""The diagnose stage's measures on plain arrays: explained variance, context
predictability, and how well proposal patches and pairs match the ground truth.

Every R^2 here is the share of the held-out targets' variance a predictor explains,
``1 - sum ||y - y_hat||^2 / sum ||y - mean(y)||^2`` (summed over rows and dimensions,
centred on the held-out targets' own mean): the train stage's ``test_explained``
(``1 - test loss / target variance``), so the numbers compare directly. 0 is predicting
the mean; it can go negative.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pipeline.boxes import box_iou
from pipeline.pairs.overlap import explained_share

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- R^2


def class_means(x: np.ndarray, labels: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_labels, D) mean of the rows of each label (the overall mean where a label has
    no row), and (n_labels,) bool: which labels had rows."""
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    means = np.tile(x.mean(axis=0), (n_labels, 1))  # (L, D)
    seen = np.zeros(n_labels, dtype=bool)
    for k in np.unique(labels):
        means[k] = x[labels == k].mean(axis=0)
        seen[k] = True
    return means, seen


def class_mean_r2(
    train_x: np.ndarray,
    train_labels: np.ndarray,
    test_x: np.ndarray,
    test_labels: np.ndarray,
    n_labels: int,
) -> float:
    """R^2 of predicting each held-out row by the training mean of its label."""
    means, _ = class_means(train_x, train_labels, n_labels)
    return explained_share(test_x, means[np.asarray(test_labels, dtype=np.int64)])


def ridge_predictions(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, alphas: tuple[float, ...]
) -> list[np.ndarray]:
    """Test predictions of a ridge regression with intercept (sklearn ``Ridge``'s
    solution) for each of ``alphas``, inputs standardised on train. One eigendecomposition
    serves every alpha: of the (F, F) Gram matrix when there are more rows than inputs,
    else of the (N, N) kernel matrix (the dual form)."""
    mean, std = train_x.mean(axis=0), train_x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    xa = (np.asarray(train_x, np.float64) - mean) / std  # (N, F), centred
    xb = (np.asarray(test_x, np.float64) - mean) / std  # (M, F)
    y_mean = train_y.mean(axis=0)
    yc = np.asarray(train_y, np.float64) - y_mean  # (N, D)
    if xa.shape[0] >= xa.shape[1]:
        lam, v = np.linalg.eigh(xa.T @ xa)  # X^T X = V diag(lam) V^T; (F,), (F, F)
        left, right = xb @ v, v.T @ (xa.T @ yc)  # (M, F), (F, D)
    else:
        lam, u = np.linalg.eigh(xa @ xa.T)  # X X^T = U diag(lam) U^T; (N,), (N, N)
        left, right = (xb @ xa.T) @ u, u.T @ yc  # (M, N), (N, D)
    lam = np.clip(lam, 0.0, None)
    left = left.astype(np.float32)  # float32 halves the per-alpha product
    return [
        (left @ (right / (lam + alpha)[:, None]).astype(np.float32)).astype(np.float64) + y_mean
        for alpha in alphas
    ]


def ridge_r2(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    alphas: float | tuple[float, ...],
    groups: np.ndarray | None = None,
    folds: int = 3,
) -> tuple[float, float]:
    """(R^2 on the test rows, the alpha used) of a ridge map fit on the train rows, inputs
    standardised on train. With several ``alphas`` the one of the best mean R^2 over a
    ``folds``-fold cross-validation on the train rows is used, folds split by ``groups``
    (e.g. the image of each pair, so that pairs of one image never straddle a fold)."""
    from sklearn.model_selection import GroupKFold, KFold

    alphas = tuple(np.atleast_1d(np.asarray(alphas, dtype=np.float64)).tolist())
    alpha = alphas[0]
    if len(alphas) > 1:
        if groups is not None and len(np.unique(groups)) >= folds:
            splits = list(GroupKFold(n_splits=folds).split(train_x, groups=groups))
        else:
            splits = list(KFold(n_splits=folds, shuffle=True, random_state=0).split(train_x))
        cv = np.zeros(len(alphas))
        for a, b in splits:
            preds = ridge_predictions(train_x[a], train_y[a], train_x[b], alphas)
            cv += [explained_share(train_y[b], p) for p in preds]
        alpha = alphas[int(np.nanargmax(cv))]
        log.debug("ridge: CV R^2 %s over alphas %s; alpha %g", cv / len(splits), alphas, alpha)
    pred = ridge_predictions(train_x, train_y, test_x, (alpha,))[0]
    return explained_share(test_y, pred), float(alpha)


# --------------------------------------------------------------------------- context


@dataclass
class ContextResult:
    accuracy: float
    majority_rate: float
    majority_class: int
    n_train: int
    n_test: int

    @property
    def ratio(self) -> float | None:
        return self.accuracy / self.majority_rate if self.majority_rate > 0 else None

    def to_dict(self, classes) -> dict:
        ratio = self.ratio
        return {
            "accuracy": round(self.accuracy, 6),
            "majority_rate": round(self.majority_rate, 6),
            "majority_class": classes[self.majority_class],
            "ratio": None if ratio is None else round(ratio, 6),
            "n_train_pairs": self.n_train,
            "n_test_pairs": self.n_test,
        }


def context_inputs(bottom_class: np.ndarray, offset: np.ndarray, n_classes: int) -> np.ndarray:
    """(M, C + 8): one-hot class of the bottom object, then the offset o_ij."""
    onehot = np.zeros((len(bottom_class), n_classes), dtype=np.float64)
    onehot[np.arange(len(bottom_class)), np.asarray(bottom_class, dtype=np.int64)] = 1.0
    return np.concatenate([onehot, np.asarray(offset, dtype=np.float64)], axis=1)


def context_predictability(
    train_bottom: np.ndarray,
    train_offset: np.ndarray,
    train_top: np.ndarray,
    test_bottom: np.ndarray,
    test_offset: np.ndarray,
    test_top: np.ndarray,
    n_classes: int,
    model: str = "trees",
    seed: int = 0,
) -> ContextResult:
    """Accuracy of predicting the top object's class from [one-hot bottom class, offset]
    on held-out pairs, and the rate of always answering the training majority class."""
    train_top = np.asarray(train_top, dtype=np.int64)
    test_top = np.asarray(test_top, dtype=np.int64)
    majority = int(np.bincount(train_top, minlength=n_classes).argmax())
    majority_rate = float(np.mean(test_top == majority)) if len(test_top) else float("nan")
    xtr = context_inputs(train_bottom, train_offset, n_classes)
    xte = context_inputs(test_bottom, test_offset, n_classes)
    if len(np.unique(train_top)) < 2:
        pred = np.full(len(test_top), majority)
    elif model == "trees":
        from sklearn.ensemble import HistGradientBoostingClassifier

        clf = HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.1, early_stopping=False, random_state=seed
        )
        pred = clf.fit(xtr, train_top).predict(xte)
    elif model == "logistic":
        from sklearn.linear_model import LogisticRegression

        pred = LogisticRegression(max_iter=2000).fit(xtr, train_top).predict(xte)
    else:
        raise ValueError(f"context model {model!r}; allowed: trees, logistic")
    accuracy = float(np.mean(pred == test_top)) if len(test_top) else float("nan")
    return ContextResult(accuracy, majority_rate, majority, len(train_top), len(test_top))


# --------------------------------------------------------------------------- matching


def match_labels(
    boxes: np.ndarray, gt_boxes: np.ndarray, gt_labels: np.ndarray, background: int, thr: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per box: the label of the best-overlapping ground-truth box when its IoU >= ``thr``,
    else ``background``; and that best IoU (0 without ground truth). (K,), (K,)."""
    iou = box_iou(boxes, gt_boxes)  # (K, G)
    if iou.shape[1] == 0:
        return np.full(len(iou), background, dtype=np.int64), np.zeros(len(iou))
    best = iou.argmax(axis=1)
    best_iou = iou[np.arange(len(iou)), best]
    labels = np.where(best_iou >= thr, np.asarray(gt_labels, dtype=np.int64)[best], background)
    return labels.astype(np.int64), best_iou
