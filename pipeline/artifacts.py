"""Every artifact's path, in one place: the folders (``paths.*`` in params.yaml, which
dvc.yaml templates from) and the file names inside them. Writers, readers and the CLI
ask this module; none builds an artifact path of its own. Formats: docs/artifacts.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import param

#: Inside ``<paths.proposals>/yolo``: the trained detector and the stage's marker.
YOLO_WEIGHTS = "weights.pt"
YOLO_MARKER = "stage.json"
#: Inside ``<paths.train>``.
MODEL = "model.pt"
CHECKPOINT = "checkpoint.pt"
#: Inside ``<paths.original>/classify``: the original network's SVM results (stage
#: ``classify_original``), next to its feature caches.
ORIGINAL_CLASSIFY = "results.h5"
#: Inside ``<paths.metrics>``: the folder of the stages' full metrics (details).
DETAILS = "details"


@dataclass(frozen=True)
class PathsConfig:
    """The artifact folders (the ``paths`` section)."""

    proposals: Path = param(Path("data/proposals"))
    pairs: Path = param(Path("data/pairs"))
    targets: Path = param(Path("data/targets"))
    train: Path = param(Path("data/train"))
    classify: Path = param(Path("data/classify"))
    detect: Path = param(Path("data/detect"))
    original: Path = param(Path("data/original"))
    synthetic: Path = param(Path("data/synthetic"))
    metrics: Path = param(Path("metrics"))
    plots: Path = param(Path("plots"))

    # ------------------------------------------------------------------ per stage

    def proposals_file(self, split: str) -> Path:
        """SCN patches of ``split`` (stage ``proposals``)."""
        return Path(self.proposals) / f"{split}.h5"

    @property
    def scn_images_manifest(self) -> Path:
        """Stage ``proposals``: ``data.scn_images`` and the SHA-256 of each of its images
        (``{"scn_images": null}`` when unset), a dependency of ``targets`` and ``train``."""
        return Path(self.proposals) / "scn_images.json"

    @property
    def detect_proposals_dir(self) -> Path:
        return Path(self.proposals) / "detect"

    def detect_proposals_file(self, split: str) -> Path:
        """Fast R-CNN RoIs of ``split`` (stage ``detect_proposals``)."""
        return self.detect_proposals_dir / f"{split}.h5"

    @property
    def yolo_dir(self) -> Path:
        """Stage ``yolo``: the trained proposal detector, or just a marker."""
        return Path(self.proposals) / "yolo"

    def pairs_file(self, split: str) -> Path:
        return Path(self.pairs) / f"{split}.h5"

    def targets_file(self, split: str) -> Path:
        return Path(self.targets) / f"{split}.h5"

    @property
    def model_file(self) -> Path:
        """The trained bottom stream (stage ``train``), read by the evaluation stages."""
        return Path(self.train) / MODEL

    @property
    def checkpoint_file(self) -> Path:
        return Path(self.train) / CHECKPOINT

    def doersch_trunk_file(self, split: str) -> Path:
        """``method: doersch``: the frozen trunk's output for the sampled pairs of ``split``."""
        return Path(self.train) / f"doersch_{split}.h5"

    @property
    def original_classify_dir(self) -> Path:
        """Stage ``classify_original``: the original network's feature caches and results."""
        return Path(self.original) / "classify"

    @property
    def original_classify_file(self) -> Path:
        return self.original_classify_dir / ORIGINAL_CLASSIFY

    @property
    def original_detect_dir(self) -> Path:
        """Stage ``detect_original``: the original backbone's detections and losses."""
        return Path(self.original) / "detect"

    def metrics_file(self, stage: str) -> Path:
        """Every stage: its headline figures, the DVC metric (``pipeline/headline.py``
        chooses them from the details)."""
        return Path(self.metrics) / f"{stage}.json"

    def details_file(self, stage: str) -> Path:
        """Every stage: everything its function returned, with timing and memory (a
        git-tracked DVC output, not a metric)."""
        return Path(self.metrics) / DETAILS / f"{stage}.json"

    def plot_file(self, name: str) -> Path:
        return Path(self.plots) / name
