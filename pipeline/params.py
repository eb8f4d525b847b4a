"""The top-level parameters: four switches and one section per stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from pipeline.artifacts import PathsConfig
from pipeline.backbones.config import NetworkConfig
from pipeline.config import ConfigError, build, read_yaml
from pipeline.data.config import DataConfig, ScenesConfig
from pipeline.data.voc import DatasetRef
from pipeline.diagnose.config import DiagnoseConfig
from pipeline.evaluate.config import ClassifyConfig, DetectConfig
from pipeline.pairs.config import PairsConfig
from pipeline.proposals.config import Proposal, ProposalsConfig
from pipeline.synthetic.config import SyntheticConfig
from pipeline.targets.config import TargetsConfig
from pipeline.train.config import DoerschConfig, TrainConfig

# The four switches. Each choice has an implementation in a registry (tests/test_config.py
# ties them): dataset -> pipeline.data.voc.dataset_dir, proposal ->
# pipeline.proposals.stage.PROPOSAL_METHODS, backbone -> pipeline.backbones.BACKBONES, method ->
# pipeline.train.stage.TRAIN_METHODS.
Dataset = Literal["scenes", "voc2007", "voc2012"]
BackboneName = Literal["efficientnet_lite0", "vgg19", "alexnet", "resnet50"]
MethodName = Literal["scn", "doersch"]
DATASETS: tuple[str, ...] = get_args(Dataset)
PROPOSALS: tuple[str, ...] = get_args(Proposal)
BACKBONES: tuple[str, ...] = get_args(BackboneName)
METHOD_NAMES: tuple[str, ...] = get_args(MethodName)


@dataclass(frozen=True)
class Params:
    dataset: Dataset = "scenes"
    proposal: Proposal = "edgebox"
    backbone: BackboneName = "efficientnet_lite0"
    method: MethodName = "scn"
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    proposals: ProposalsConfig = field(default_factory=ProposalsConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    doersch: DoerschConfig = field(default_factory=DoerschConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    diagnose: DiagnoseConfig = field(default_factory=DiagnoseConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    @property
    def dataset_ref(self) -> DatasetRef:
        """The dataset the stages read (``dataset`` with ``data`` and ``scenes``)."""
        return DatasetRef(self.dataset, self.data, self.scenes)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml into :class:`Params`."""
    data = read_yaml(path)
    try:
        return build(Params, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
