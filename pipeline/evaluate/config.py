"""Configuration of the evaluation stages (linear-SVM classification, Fast R-CNN)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.config import ConfigError, device_param, param

VISSL_COSTS = (0.01, 0.1, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 50.0, 100.0, 1000.0)


@dataclass(frozen=True)
class ClassifyConfig:
    """Linear-SVM evaluation (VISSL's VOC07 protocol, REFERENCE.md section 4).

    ``costs``: the C values tried per class, chosen by ``cv_folds``-fold cross-validated
    AP (VISSL's list by default; a shorter list is faster, e.g. [0.1, 1, 10, 100]).
    """

    seed: int = param(
        0, ge=0, help="CV folds, context-pair sampling, bootstrap resamples, low-shot draws"
    )
    costs: tuple[float, ...] = param(VISSL_COSTS, help="SVM cost list searched per class")
    cv_folds: int = param(3, ge=2, help="folds of the cross-validation choosing C")
    batch_size: int = param(64, ge=1, help="crops per forward pass of feature extraction")
    max_context_pairs: int = param(
        5000, ge=1, help="at most this many object pairs per split for the context experiment"
    )
    device: str = device_param(
        help="feature extraction and Newton SVM device: auto, cpu, cuda, cuda:N"
    )
    workers: int = param(
        1, ge=1, help="processes of the sklearn SVM cross-validation (results do not depend on it)"
    )
    threads: int = param(
        0,
        ge=0,
        help="torch CPU threads of the Newton SVM solver (0: torch's default); 1 is much "
        "faster on a busy machine (results do not depend on it)",
    )
    bootstrap: int = param(
        1000,
        ge=0,
        help="paired bootstrap resamples of the test items for the 95% interval of each "
        "SCN - original mAP difference, full and low-shot per k, and of diagnose_objects' "
        "ceiling - original headroom (0: no intervals)",
    )
    lowshot_k: tuple[int, ...] = param(
        (1, 2, 4, 8, 16, 32, 64, 96),
        ge=1,
        help="positives per class of the low-shot SVMs (VISSL's VOC07 protocol); [] disables",
    )
    lowshot_samples: int = param(5, ge=1, help="independent low-shot samples per k (VISSL: 5)")
    solver: Literal["newton", "sklearn"] = param(
        "newton",
        help="SVM solver: newton (batched exact Newton, pipeline/evaluate/classify/l2svm.py) or "
        "sklearn (LinearSVC, the reference); same problem, APs within 0.1 point",
    )

    def validate(self) -> None:
        if not self.costs or any(c <= 0 for c in self.costs):
            raise ConfigError(
                f"classify.costs: {list(self.costs)!r} is not allowed; "
                "allowed: a non-empty list of positive numbers"
            )
        if len(set(self.lowshot_k)) != len(self.lowshot_k):
            raise ConfigError(
                f"classify.lowshot_k: {list(self.lowshot_k)!r} repeats a value; "
                "allowed: distinct integers >= 1 (or [] for no low-shot evaluation)"
            )


@dataclass(frozen=True)
class DetectConfig:
    """Fast R-CNN over precomputed proposals (stage ``detect``).

    The defaults here are the Fast R-CNN paper's VOC2007 schedule (REFERENCE.md
    section 4: 40k iterations, lr 1e-3 stepped x0.1 at 30k, 2 images x 128 RoIs, 25%
    foreground, shorter side 600, test NMS 0.3, body fine-tuned). params.yaml holds the
    reduced CPU default for the embedded scenes (frozen body, few hundred iterations,
    256-pixel images), documented there.
    """

    seed: int = param(0, ge=0)
    seeds: int = param(
        1,
        ge=1,
        le=100,
        help="detectors trained per network, with seeds seed, seed + 1, ...: the SCN - "
        "original interval pools test images and detector seeds (metrics: their mean)",
    )
    iterations: int = param(40000, ge=1, help="SGD iterations (minibatches)")
    lr: float = param(1e-3, gt=0)
    lr_step: int = param(30000, ge=1, help="multiply lr by lr_gamma after this many iterations")
    lr_gamma: float = param(0.1, gt=0, le=1)
    momentum: float = param(0.9, ge=0, lt=1)
    weight_decay: float = param(5e-4, ge=0)
    images_per_batch: int = param(2, ge=1)
    rois_per_image: int = param(128, ge=1, help="sampled RoIs per image and iteration")
    fg_fraction: float = param(0.25, gt=0, le=1, help="at most this share of RoIs foreground")
    fg_iou: float = param(0.5, gt=0, le=1, help="foreground: IoU with a gt box >= this")
    bg_iou_low: float = param(0.1, ge=0, lt=1, help="background: IoU in [bg_iou_low, bg_iou_high)")
    bg_iou_high: float = param(0.5, gt=0, le=1)
    add_gt_rois: bool = param(True, help="add the gt boxes to the training RoIs (Fast R-CNN)")
    flip: bool = param(True, help="train on horizontally flipped copies too")
    min_size: int = param(600, ge=32, help="shorter image side after rescaling")
    max_size: int = param(1000, ge=32, help="cap on the longer side after rescaling")
    roi_op: Literal["align", "pool"] = param("align", help="torchvision RoIAlign or RoIPool")
    roi_size: int = param(
        0, ge=0, help="RoI pooling output side; 0: the backbone's own (e.g. 14 for EfficientNet)"
    )
    frozen_head_layers: int = param(
        0, ge=0, help="freeze this many leading layers of the RoI head (0: fine-tune it all)"
    )
    train_body: bool = param(
        True, help="fine-tune the conv body; false freezes it and caches its feature maps"
    )
    feature_cache_mb: int = param(
        2048, ge=0, help="memory for cached feature maps of a frozen body (0: no cache)"
    )
    max_proposals: int = param(2000, ge=1, help="top-scoring proposals kept per image")
    score_thresh: float = param(0.05, ge=0, lt=1, help="test: drop detections below this")
    nms: float = param(0.3, gt=0, le=1, help="test: per-class NMS IoU threshold")
    max_detections: int = param(100, ge=1, help="test: detections kept per image")
    n_examples: int = param(4, ge=0, help="test images drawn in the examples PNG")
    bootstrap: int = param(
        1000,
        ge=0,
        help="paired bootstrap resamples of the test images: 95% interval of the SCN - "
        "original mAP difference (0: none)",
    )
    device: str = device_param()
    threads: int = param(
        0, ge=0, help="torch CPU threads (0: torch's default); 1 is faster on a busy machine"
    )

    def validate(self) -> None:
        if not self.bg_iou_low < self.bg_iou_high <= self.fg_iou:
            raise ConfigError(
                f"detect.bg_iou_low/bg_iou_high/fg_iou: {self.bg_iou_low}/{self.bg_iou_high}/"
                f"{self.fg_iou} are out of order; allowed: bg_iou_low < bg_iou_high <= fg_iou"
            )
        if self.min_size > self.max_size:
            raise ConfigError(
                f"detect.min_size: {self.min_size} exceeds detect.max_size={self.max_size}; "
                "allowed: min_size <= max_size"
            )
