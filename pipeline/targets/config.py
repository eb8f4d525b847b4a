"""Configuration of the targets stage (frozen top-stream feature cache)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.config import param


@dataclass(frozen=True)
class TargetsConfig:
    seed: int = param(0, ge=0)
    batch_size: int = param(64, ge=1)
    workers: int = param(1, ge=0, help="DataLoader worker processes (decode, crop, resize)")
    dtype: Literal["float16", "float32"] = param("float32")
    device: str = param("auto", help="auto, cpu, cuda, cuda:N")
    amp: bool = param(False, help="mixed precision on the GPU")
    trunk_cache: bool = param(True, help="also cache the frozen trunk output")
