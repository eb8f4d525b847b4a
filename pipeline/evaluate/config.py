"""Configuration of the evaluation stages (linear-SVM classification, Fast R-CNN)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import param

VISSL_COSTS = (0.01, 0.1, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 50.0, 100.0, 1000.0)


@dataclass(frozen=True)
class ClassifyConfig:
    seed: int = param(0, ge=0)
    costs: tuple[float, ...] = param(VISSL_COSTS, help="SVM cost list searched per class")
    cv_folds: int = param(3, ge=2)
    batch_size: int = param(64, ge=1)
    max_context_pairs: int = param(5000, ge=1)


@dataclass(frozen=True)
class DetectConfig:
    seed: int = param(0, ge=0)
    iterations: int = param(40000, ge=1)
    lr: float = param(1e-3, gt=0)
    lr_step: int = param(30000, ge=1)
    momentum: float = param(0.9, ge=0, lt=1)
    weight_decay: float = param(5e-4, ge=0)
    images_per_batch: int = param(2, ge=1)
    rois_per_image: int = param(128, ge=1)
    fg_fraction: float = param(0.25, gt=0, le=1)
    min_size: int = param(600, ge=32, help="shorter image side")
    max_size: int = param(1000, ge=32)
    nms: float = param(0.3, gt=0, le=1)
    device: str = param("auto")
