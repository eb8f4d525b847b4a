"""One place that seeds every random number generator."""

from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int, deterministic: bool = True) -> np.random.Generator:
    """Seed Python, NumPy and torch; return a NumPy ``Generator`` seeded with ``seed``.

    With ``deterministic`` the CPU path gives identical outputs for the same seed.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - libraries that use the legacy global RNG
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard requirement of the project
        return np.random.default_rng(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return np.random.default_rng(seed)
