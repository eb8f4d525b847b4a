"""One rule for the ``device`` parameters of every stage."""

from __future__ import annotations

import torch

from pipeline.config import ConfigError


def resolve_device(name: str, key: str = "device", local_rank: int = 0) -> torch.device:
    """``auto``: a GPU when one is visible, else the CPU; ``cpu``; ``cuda``; ``cuda:N``.

    ``cuda`` means ``cuda:<local_rank>`` (one GPU per DDP process). A CUDA device that is
    not there, or a name torch does not know, is a :class:`ConfigError` naming ``key``.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}: {name!r} but no GPU is visible; allowed here: auto, cpu")
        count = torch.cuda.device_count()
        if name == "cuda":
            name = f"cuda:{local_rank % count}"
        elif name.startswith("cuda:") and name[5:].isdigit() and int(name[5:]) >= count:
            raise ConfigError(
                f"{key}: {name!r} but only {count} GPU(s) are visible; allowed here: auto, cpu, "
                + ", ".join(f"cuda:{i}" for i in range(count))
            )
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"{key}: {name!r} is not a device; allowed: auto, cpu, cuda, cuda:N"
        ) from None


def autocast_dtype(dev: torch.device) -> torch.dtype | None:
    """The reduced precision ``dev`` runs fast: float16 on a CUDA GPU, bfloat16 on a CPU
    whose oneDNN kernels support it (AVX-512 BF16 or AMX), else None (stay in float32)."""
    if dev.type == "cuda":
        return torch.float16
    if dev.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None
