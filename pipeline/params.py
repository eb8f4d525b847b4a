"""The top-level parameters: three switches and one section per stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipeline.backbones.config import NetworkConfig
from pipeline.config import param
from pipeline.data.config import DataConfig, ScenesConfig
from pipeline.evaluate.config import ClassifyConfig, DetectConfig
from pipeline.pairs.config import PairsConfig
from pipeline.proposals.config import ProposalsConfig
from pipeline.synthetic.config import SyntheticConfig
from pipeline.targets.config import TargetsConfig
from pipeline.train.config import TrainConfig

DATASETS = ("scenes", "voc2007", "voc2012")
PROPOSALS = ("edgebox", "yolo", "bbox", "random")
BACKBONES = ("efficientnet_lite0", "vgg19", "alexnet", "resnet50")


@dataclass(frozen=True)
class PathsConfig:
    """Every artifact path, in one place (dvc.yaml templates from these keys)."""

    proposals: Path = param(Path("data/proposals"))
    pairs: Path = param(Path("data/pairs"))
    targets: Path = param(Path("data/targets"))
    train: Path = param(Path("data/train"))
    classify: Path = param(Path("data/classify"))
    detect: Path = param(Path("data/detect"))
    synthetic: Path = param(Path("data/synthetic"))
    metrics: Path = param(Path("metrics"))
    plots: Path = param(Path("plots"))


@dataclass(frozen=True)
class Params:
    dataset: Literal["scenes", "voc2007", "voc2012"] = "scenes"
    proposal: Literal["edgebox", "yolo", "bbox", "random"] = "edgebox"
    backbone: Literal["efficientnet_lite0", "vgg19", "alexnet", "resnet50"] = "efficientnet_lite0"
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    proposals: ProposalsConfig = field(default_factory=ProposalsConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
