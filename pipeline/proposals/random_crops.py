"""Random proposals (``proposal: random``): N square crops of S px per image (paper: 5 of 64).

Each image draws from its own generator seeded by ``(proposals.seed, crc32(image id))``,
so an image's crops do not depend on the order or the subset of images processed. A
crop larger than the image is clipped to it; scores are 1.
"""

from __future__ import annotations

import time
import zlib
from typing import TYPE_CHECKING

import numpy as np

from pipeline.proposals.base import ProposalSet, clip_boxes

if TYPE_CHECKING:
    from pipeline.data.voc import VOCDataset
    from pipeline.proposals.config import ProposalsConfig


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``image_id``."""
    return np.random.default_rng([seed, zlib.crc32(image_id.encode("utf-8"))])


def random_squares(
    rng: np.random.Generator, width: int, height: int, n: int, size: int
) -> np.ndarray:
    """(n, 4) float32 squares of side ``size`` at uniform integer positions, clipped."""
    x1 = rng.integers(0, max(0, width - size) + 1, n)  # (n,)
    y1 = rng.integers(0, max(0, height - size) + 1, n)  # (n,)
    boxes = np.stack([x1, y1, x1 + size, y1 + size], axis=1).astype(np.float32)  # (n, 4)
    return clip_boxes(boxes, width, height)


def propose(dataset: VOCDataset, cfg: ProposalsConfig, split: str) -> ProposalSet:
    """``proposals.random.n`` random squares of ``proposals.random.size`` px per image."""
    seed, cfg = cfg.seed, cfg.random
    start = time.perf_counter()
    images = list(dataset)
    boxes = [
        random_squares(image_rng(seed, im.id), im.width, im.height, cfg.n, cfg.size)
        for im in images
    ]
    scores = [np.ones(len(b), dtype=np.float32) for b in boxes]
    provenance = {
        "method": "random",
        "edge_source": "",
        "thresholds": {"n": cfg.n, "size": cfg.size, "seed": seed},
        "weights_sha256": "",
    }
    return ProposalSet.from_images(
        images, boxes, scores, provenance, dataset.policy, time.perf_counter() - start
    )
