"""Configuration of the ``diagnose`` stage (is there room and context for SCN?)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.config import ConfigError, device_param, param


@dataclass(frozen=True)
class DiagnoseConfig:
    """Cheap pre-flight measures on a dataset and backbone (README, "Diagnose").

    The caps keep the stage a small fraction of ``make repro`` on the default; raise
    them (or ``ceiling_epochs``) for a closer look. The SVM protocol's cost list and folds
    are ``classify.costs`` and ``classify.cv_folds`` (so the original mAP is comparable
    with the classify stage's).
    """

    seed: int = param(0, ge=0, help="object/pair sampling, ceiling init and split, models")
    max_objects: int = param(
        2000,
        ge=2,
        help="at most this many ground-truth objects per split (whole images, seeded); "
        "the Obj SVMs and the ceiling see only these",
    )
    max_pairs: int = param(
        4000, ge=2, help="at most this many pairs per split (ground-truth and proposal pairs)"
    )
    batch_size: int = param(64, ge=1, help="crops per forward pass of feature extraction")
    device: str = device_param(help="feature extraction and ceiling device")
    ceiling_epochs: int = param(
        5, ge=1, help="supervised ceiling: at most this many epochs of Adam over the train objects"
    )
    ceiling_lr: float = param(1e-4, gt=0, help="supervised ceiling: Adam learning rate")
    ceiling_batch_size: int = param(64, ge=1, help="supervised ceiling: objects per step")
    ceiling_holdout: float = param(
        0.2,
        gt=0,
        lt=1,
        help="supervised ceiling: share of the train objects held out for early stopping "
        "on the held-out cross-entropy (the best epoch's head is kept)",
    )
    ceiling_patience: int = param(
        2,
        ge=1,
        help="supervised ceiling: stop after this many epochs without a better held-out loss",
    )
    context_model: Literal["trees", "logistic"] = param(
        "trees",
        help="classifier of the top object's class from [one-hot bottom class, offset]: "
        "gradient-boosted trees (sklearn HistGradientBoosting) or logistic regression",
    )
    ridge_alphas: tuple[float, ...] = param(
        (1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0),
        help="ridge penalties of the no-training map [h1_j, o_ij] -> top target (inputs "
        "standardised); with several, chosen by 3-fold CV over images on the fit pairs",
    )
    context_epochs: int = param(
        15,
        ge=1,
        help="context module on the frozen features (Adam, per-pair mean loss, "
        "b2 at the mean target, the best held-out epoch, patience 3): at most these epochs",
    )
    context_lr: float = param(1e-3, gt=0, help="that context module's Adam learning rate")
    context_hidden: int = param(1024, ge=1, help="that context module's hidden units")
    match_iou: float = param(
        0.5, gt=0, le=1, help="a patch matches a ground-truth object at IoU >= this"
    )
    low_iou: float = param(
        0.2, gt=0, le=1, help="pair quality: the share of pairs whose two patches overlap less"
    )
    workers: int = param(
        1, ge=1, help="processes for the SVM cross-validation (results do not depend on it)"
    )

    def validate(self) -> None:
        if not self.ridge_alphas or any(a <= 0 for a in self.ridge_alphas):
            raise ConfigError(
                f"diagnose.ridge_alphas: {list(self.ridge_alphas)!r} is not allowed; "
                "allowed: a non-empty list of positive numbers"
            )
