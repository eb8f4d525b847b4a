"""Configuration of the targets stage (frozen top-stream feature cache)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.config import device_param, param


@dataclass(frozen=True)
class TargetsConfig:
    seed: int = param(0, ge=0)
    batch_size: int = param(64, ge=1, help="patches per forward pass")
    workers: int = param(
        1, ge=0, help="DataLoader worker processes (decode, crop, resize); 0: in the main process"
    )
    dtype: Literal["float16", "float32"] = param(
        "float32", help="storage dtype of features and trunk; float16 halves the trunk cache"
    )
    device: str = device_param()
    amp: bool = param(
        False,
        help="reduced precision for the frozen network: float16 autocast on a GPU, bfloat16 on "
        "a CPU with AVX-512 BF16 or AMX (else float32, with a warning); BENCHMARKS.md has its "
        "deviation from float32",
    )
    trunk_cache: bool = param(True, help="also cache the frozen trunk output (scope fc, fc+conv5)")
    compression: Literal["gzip", "lzf", "none"] = param(
        "gzip", help="HDF5 filter: gzip (level 1, portable), lzf (faster, h5py only), none"
    )
