"""The in-memory form of a split's proposals, and what every proposal method shares.

A method is a function ``propose(dataset, cfg: ProposalsConfig, split) -> ProposalSet``
in its own module; :data:`pipeline.proposals.stage.PROPOSAL_METHODS` lists them by name, the
choices of the top-level ``proposal`` switch (and of ``proposals.detect_method``).

Boxes follow the project convention (``docs/artifacts.md``): ``(x1, y1, x2, y2)``
float32 continuous pixel coordinates in the frame of the original image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import SkipPolicy

if TYPE_CHECKING:
    from pipeline.data.voc import VOCDataset, VOCImage
    from pipeline.proposals.config import ProposalsConfig

log = logging.getLogger(__name__)

#: ``propose(dataset, cfg, split) -> ProposalSet``: one per method, listed by name in
#: :data:`pipeline.proposals.stage.PROPOSAL_METHODS`.
ProposeFn = Callable[["VOCDataset", "ProposalsConfig", str], "ProposalSet"]


def empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), dtype=np.float32)


@dataclass
class ProposalSet:
    """Proposals of every image of one split, one entry per (kept) image, same order.

    ``boxes[k]`` is (K_k, 4) float32 in the project convention, ``scores[k]`` (K_k,)
    float32; ``image_sizes`` is (n_images, 2) int32 (width, height). ``provenance`` holds
    ``method``, ``edge_source``, ``thresholds`` (a dict), ``weights_sha256`` and anything
    else the method wants recorded. ``policy`` counts the images skipped while mining.
    ``seconds`` is the wall time of the mining itself (for images/s).
    """

    image_ids: list[str] = field(default_factory=list)
    image_sizes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int32))
    boxes: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    policy: SkipPolicy | None = None
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.image_sizes = np.asarray(self.image_sizes, dtype=np.int32).reshape(-1, 2)
        self.boxes = [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in self.boxes]
        self.scores = [np.asarray(s, dtype=np.float32).reshape(-1) for s in self.scores]
        n = len(self.image_ids)
        if not (len(self.image_sizes) == len(self.boxes) == len(self.scores) == n):
            raise ValueError(
                f"ProposalSet: {n} image ids, {len(self.image_sizes)} sizes, "
                f"{len(self.boxes)} box arrays, {len(self.scores)} score arrays"
            )
        for k, (b, s) in enumerate(zip(self.boxes, self.scores, strict=True)):
            if len(b) != len(s):
                raise ValueError(
                    f"ProposalSet: image {self.image_ids[k]}: {len(b)} boxes, {len(s)} scores"
                )

    @classmethod
    def from_images(
        cls,
        images: list[VOCImage],
        boxes: list[np.ndarray],
        scores: list[np.ndarray],
        provenance: dict[str, Any],
        policy: SkipPolicy | None = None,
        seconds: float = 0.0,
    ) -> ProposalSet:
        """Build from dataset images (their ids and sizes) and per-image arrays."""
        return cls(
            image_ids=[im.id for im in images],
            image_sizes=np.array([(im.width, im.height) for im in images], dtype=np.int32),
            boxes=boxes,
            scores=scores,
            provenance=provenance,
            policy=policy,
            seconds=seconds,
        )

    def __len__(self) -> int:
        return len(self.image_ids)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        return iter(zip(self.image_ids, self.boxes, self.scores, strict=True))

    @property
    def n_boxes(self) -> int:
        return int(sum(len(b) for b in self.boxes))

    def offsets(self) -> np.ndarray:
        """(n_images + 1,) int64 CSR offsets: image k's rows are offsets[k]:offsets[k+1]."""
        counts = np.array([len(b) for b in self.boxes], dtype=np.int64)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def index(self, image_id: str) -> int:
        return self.image_ids.index(image_id)


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip (K, 4) boxes to the ``width`` x ``height`` image frame."""
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out


def filter_boxes(
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    min_score: float = 0.0,
    max_aspect_ratio: float = float("inf"),
    min_size: float = 0.0,
    max_boxes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Drop boxes scoring below ``min_score``, with long/short side above
    ``max_aspect_ratio``, or a side below ``min_size``; keep the ``max_boxes`` best
    (by score, stable). Degenerate boxes (non-positive width or height) always go.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    ok = (w > 0) & (h > 0) & np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
    ok &= scores >= min_score
    ok &= np.minimum(w, h) >= min_size
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(w, h) / np.minimum(w, h)
    ok &= ratio <= max_aspect_ratio
    boxes, scores = boxes[ok], scores[ok]
    order = np.argsort(-scores, kind="stable")
    if max_boxes is not None:
        order = order[:max_boxes]
    return boxes[order], scores[order]
