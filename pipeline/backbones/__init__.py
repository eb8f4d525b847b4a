"""Backbones: the registry of pretrained CNNs and the patch preprocessing they share."""

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
