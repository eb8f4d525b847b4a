"""Configuration of the paper's synthetic experiment (section 4.1)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import param


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = param(0, ge=0)
    n_square: int = param(300, ge=1)
    n_triangle: int = param(300, ge=1)
    n_black: int = param(200, ge=1)
    n_test: int = param(200, ge=1)
    epochs: int = param(40, ge=1)
