"""Backbones: the registry of pretrained CNNs and the patch preprocessing they share.

The registry's names are loaded on first use (PEP 562), so that importing
:mod:`pipeline.backbones.config` (every stage does, through :mod:`pipeline.params`) does
not import torch: the EdgeBoxes worker processes, which re-import their stage's entry
script, start in a fraction of a second instead of seconds (BENCHMARKS.md, "Proposals").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.backbones.registry import (
        BACKBONES,
        DOWNLOAD_ONLY,
        SCOPES,
        Backbone,
        WeightsUnavailable,
        build_backbone,
    )

__all__ = [
    "BACKBONES",
    "DOWNLOAD_ONLY",
    "SCOPES",
    "Backbone",
    "WeightsUnavailable",
    "build_backbone",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("pipeline.backbones.registry"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
