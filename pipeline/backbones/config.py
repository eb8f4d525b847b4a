"""Configuration of the network shared by the top and bottom streams."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.config import param


@dataclass(frozen=True)
class NetworkConfig:
    """Options of the backbone chosen by the top-level ``backbone`` switch."""

    weights: Path | None = param(
        None, help="local checkpoint; none: the backbone's default pretrained weights"
    )
    input_size: int = param(
        224, ge=32, le=1024, help="patches are resized to this square (paper: 224)"
    )
    scope: Literal["fc", "fc+conv5", "all"] = param(
        "fc",
        help="fine-tuning scope of the bottom stream: fc (paper default), fc+conv5, all; "
        "the layers below it are frozen and cached as the trunk (docs/backbones.md)",
    )
