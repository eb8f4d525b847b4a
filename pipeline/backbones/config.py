"""Configuration of the network shared by the top and bottom streams."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.config import param

#: Fine-tuning scopes; every registered backbone implements each (tests/test_config.py).
Scope = Literal["fc", "fc+conv5", "all"]
MIN_INPUT_SIZE = 32


@dataclass(frozen=True)
class NetworkConfig:
    """Options of the backbone chosen by the top-level ``backbone`` switch."""

    weights: Path | None = param(
        None, help="local checkpoint; none: the backbone's default pretrained weights"
    )
    input_size: int = param(
        224, ge=MIN_INPUT_SIZE, le=1024, help="patches are resized to this square (paper: 224)"
    )
    scope: Scope = param(
        "fc",
        help="fine-tuning scope of the bottom stream: fc (paper default), fc+conv5, all; "
        "the layers below it are frozen and cached as the trunk (docs/backbones.md)",
    )
