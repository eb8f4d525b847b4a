"""Checkpoints of the training loop, whatever the method: write, match, restore.

``checkpoint.pt`` holds the model, optimiser, scheduler, grad scaler, the RNG states of
every process, the epoch, the config and the history (without wall-clock times), and with
``train.select: best`` the best epoch's weights so far (``best_model``), written
atomically with canonical strings, so the same run writes the same bytes whether it
started afresh or resumed (DVC hashes them). A checkpoint is continued only when its
``key`` (the train config minus :data:`RESUME_FREE_KEYS`, plus the caller's provenance)
matches; otherwise training starts from scratch and the log says why.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.config import to_dict
from pipeline.io import atomic_path, canonical
from pipeline.provenance import code_version
from pipeline.train.config import TrainConfig
from pipeline.train.distributed import DistInfo
from pipeline.train.history import without_wall_clock

log = logging.getLogger(__name__)

# The format tag of every checkpoint the loop writes (kept from when the loop trained
# only the SCN: a new tag would change the bytes and orphan existing checkpoints).
CHECKPOINT_FORMAT = "scn-checkpoint/1"
# Keys of the train config that may change between an interrupted run and its resumption.
RESUME_FREE_KEYS = ("epochs", "resume", "device", "workers", "preload_max_mb")


# ----------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
    """Every RNG state of this process: torch (and CUDA), numpy's legacy global, Python's."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002 - the legacy global RNG is state too
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- files


def resume_key(cfg: TrainConfig, meta: dict[str, Any]) -> dict[str, Any]:
    """What must match for a checkpoint to be continued."""
    train = {k: v for k, v in to_dict(cfg).items() if k not in RESUME_FREE_KEYS}
    return {"train": train, **meta}


def load_checkpoint(path: Path, key: dict[str, Any], epochs: int) -> dict[str, Any] | None:
    """The checkpoint at ``path`` when it continues this run, else None (logged why)."""
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file: start afresh, say why
        log.warning("%s: unreadable checkpoint (%s); training from scratch", path, err)
        return None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        log.warning("%s: not a training checkpoint; training from scratch", path)
        return None
    if ckpt.get("key") != key:
        diff = sorted(
            k
            for k in set(key) | set(ckpt.get("key", {}))
            if key.get(k) != ckpt.get("key", {}).get(k)
        )
        log.warning("%s: written for another configuration (%s); training from scratch", path, diff)
        return None
    if ckpt["epoch"] > epochs:
        log.warning(
            "%s: at epoch %d, beyond train.epochs=%d; training from scratch",
            path,
            ckpt["epoch"],
            epochs,
        )
        return None
    return ckpt


def restore_checkpoint(
    ckpt: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    info: DistInfo,
) -> tuple[list[dict[str, float]], int]:
    """Load ``ckpt`` into the training state and this process's RNGs; (history, epoch)."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    states = ckpt["rng"]
    if len(states) == info.world_size:
        set_rng_state(states[info.rank])
    else:
        log.warning("checkpoint from %d processes, now %d: RNG reseeded", len(states),
                    info.world_size)  # fmt: skip
    return list(ckpt["history"]), int(ckpt["epoch"])


def save_checkpoint(
    path: Path,
    *,
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    rng: list[dict[str, Any]],
    history: list[dict[str, float]],
    key: dict[str, Any],
    config: dict[str, Any],
    best_model: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the training state after ``epoch`` epochs atomically (the same content, the
    same bytes). ``rng``: the :func:`rng_state` of every process, in rank order;
    ``best_model``: the state dict of the best epoch so far, stored when given."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng,
        "history": without_wall_clock(history),
        "key": key,
        "config": config,
        "code_version": code_version(),
    }
    if best_model is not None:
        payload["best_model"] = best_model
    with atomic_path(path) as tmp:
        torch.save(canonical(payload), tmp)
