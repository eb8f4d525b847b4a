"""Ground-truth proposals (``proposal: bbox``): every annotated box, labels ignored, score 1.

Difficult objects are kept (they are real objects; only the detection metric ignores
them). Boxes are clipped to the image and degenerate ones dropped.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from pipeline.proposals.base import ProposalSet, clip_boxes, filter_boxes

if TYPE_CHECKING:
    from pipeline.data.voc import VOCDataset
    from pipeline.proposals.config import ProposalsConfig


def propose(dataset: VOCDataset, cfg: ProposalsConfig, split: str) -> ProposalSet:
    """One proposal per ground-truth object of each image of ``dataset``."""
    start = time.perf_counter()
    images = list(dataset)
    boxes, scores = [], []
    for im in images:
        b = clip_boxes(im.boxes(include_difficult=True), im.width, im.height)  # (K, 4)
        b, s = filter_boxes(b, np.ones(len(b), dtype=np.float32))  # drops degenerate boxes only
        boxes.append(b)
        scores.append(s)
    provenance = {
        "method": "bbox",
        "edge_source": "",
        "thresholds": {"include_difficult": True},
        "weights_sha256": "",
    }
    return ProposalSet.from_images(
        images, boxes, scores, provenance, dataset.policy, time.perf_counter() - start
    )
