"""Configuration of the pairs stage (pair manifests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.config import ConfigError, param


@dataclass(frozen=True)
class PairsConfig:
    """How (top i, bottom j, offset o_ij) triples are drawn from each image's patches.

    ``offset_scale``: ``image`` divides x corner differences by the image width and y by
    its height (offsets in [-1, 1]); ``none`` keeps pixels.
    """

    seed: int = param(0, ge=0)
    ordered: bool = param(True, help="all ordered pairs (i, j) and (j, i), or unordered")
    max_pairs_per_image: int = param(20, ge=1)
    min_iou: float = param(0.0, ge=0, le=1, help="keep pairs whose IoU is at least this")
    max_iou: float = param(0.5, ge=0, le=1, help="... and at most this")
    symmetric: bool = param(False, help="double pairs by swapping top/bottom (paper: no gain)")
    offset_scale: Literal["image", "none"] = param("image")

    def validate(self) -> None:
        if self.min_iou > self.max_iou:
            raise ConfigError(
                f"pairs.min_iou: {self.min_iou} is above pairs.max_iou={self.max_iou}; "
                "allowed: min_iou <= max_iou"
            )
