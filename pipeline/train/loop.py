"""The training loop, whatever the method (:mod:`pipeline.train.methods`).

SGD with momentum and weight decay over the method's parameter groups, a step learning
rate (``lr`` times ``lr_gamma`` from epoch ``lr_step_epoch`` on) with an optional linear
warm-up over ``warmup_epochs``, mixed precision on request. Each epoch logs the training
loss and the method's held-out metrics, appends them to the history, then writes
``checkpoint.pt`` atomically (:mod:`pipeline.train.checkpoint`); ``train.resume``
continues from it to the same weights as an uninterrupted run.

Device: the GPU when present (``train.device: auto``), else the CPU. Several processes:
``torchrun --nproc_per_node=N stages/train.py`` runs DistributedDataParallel
(:mod:`pipeline.train.distributed`) with a DistributedSampler; ``train.batch_size`` is
the global batch, split evenly over the processes, so N processes follow the
single-process trajectory (up to float summation order). Only rank 0 writes files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from pipeline.config import ConfigError, to_dict
from pipeline.devices import resolve_device
from pipeline.train.checkpoint import (
    load_checkpoint,
    restore_checkpoint,
    resume_key,
    rng_state,
    save_checkpoint,
)
from pipeline.train.config import TrainConfig
from pipeline.train.distributed import (
    all_gather_object,
    all_reduce,
    barrier,
    dist_info,
    rank_seed,
    wrap,
)
from pipeline.train.methods.base import FitResult, Method, autocast

log = logging.getLogger(__name__)


def history_fields(method: Method) -> list[str]:
    """The keys of each history record, in order."""
    return ["epoch", "train_loss", *method.record_keys, "lr", "seconds"]


def _loader(ds: Dataset, sampler, batch: int, workers: int, pin: bool) -> DataLoader:
    return DataLoader(
        ds,
        sampler=BatchSampler(sampler, batch, drop_last=False),
        batch_size=None,  # the dataset returns whole batches
        num_workers=workers,
        pin_memory=pin,
    )


def fit(
    method: Method,
    cfg: TrainConfig,
    *,
    checkpoint: Path | None = None,
    meta: dict[str, Any] | None = None,
    on_epoch_start: Callable[[int], None] | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> FitResult:
    """Train ``method.model`` on ``method.train_set`` for ``cfg.epochs`` epochs, with the
    method's held-out evaluation after each.

    Runs DDP when a process group is initialised (each process must call ``fit`` with
    the same arguments). ``checkpoint``: written each epoch by rank 0, and continued from
    when ``cfg.resume`` and it matches ``meta`` + the config. ``on_epoch_start(epoch)``
    runs after the method's own checks; ``on_epoch_end(epoch, record)`` sees each
    history record.
    """
    info = dist_info()
    device = resolve_device(cfg.device, "train.device", info.local_rank)
    if cfg.batch_size % info.world_size:
        raise ConfigError(
            f"train.batch_size: {cfg.batch_size} is not divisible by the {info.world_size} "
            "processes; allowed: a multiple of the world size"
        )
    method.check_data()
    model = method.model
    model.to(device)
    net = wrap(model, device, info)
    opt = torch.optim.SGD(
        method.param_groups(cfg),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [cfg.lr_step_epoch], gamma=cfg.lr_gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
    key = resume_key(cfg, meta or {})
    history: list[dict[str, float]] = []
    start_epoch = 0
    torch.manual_seed(rank_seed(cfg.seed, info.rank))  # dropout etc. differ per process
    ckpt = load_checkpoint(checkpoint, key, cfg.epochs) if checkpoint and cfg.resume else None
    if ckpt is not None:
        history, start_epoch = restore_checkpoint(ckpt, model, opt, sched, scaler, info)
        log.info("resuming from %s at epoch %d of %d", checkpoint, start_epoch, cfg.epochs)

    train_set = method.train_set
    sampler = DistributedSampler(
        train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed
    )
    per_rank = cfg.batch_size // info.world_size
    loader = _loader(train_set, sampler, per_rank, cfg.workers, device.type == "cuda")
    # DDP averages gradients over processes: scale a summed loss back to the global sum.
    loss_scale = float(info.world_size) if method.reduction == "sum" else 1.0
    method.setup(device, resumed=ckpt is not None)
    warmup_steps = cfg.warmup_epochs * len(loader)
    step = start_epoch * len(loader)
    train_seconds, samples_seen = 0.0, 0
    for epoch in range(start_epoch, cfg.epochs):
        method.on_epoch_start(epoch)
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        sampler.set_epoch(epoch)
        model.train()
        lr = opt.param_groups[0]["lr"]
        total = torch.zeros(2, dtype=torch.float64, device=device)  # (loss sum, samples)
        t0 = time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=None if info.is_main else True)  # fmt: skip
        scheduled = [g["lr"] for g in opt.param_groups]
        for batch in bar:
            if step < warmup_steps:  # linear warm-up of every group's scheduled lr
                for g, base in zip(opt.param_groups, scheduled, strict=True):
                    g["lr"] = base * (step + 1) / warmup_steps
            step += 1
            batch = method.to_device(batch, device)
            with autocast(device, cfg.amp):
                out = method.forward(net, batch)
            loss = method.loss(out, batch)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss.value * loss_scale).backward()
            scaler.step(opt)
            scaler.update()
            with torch.no_grad():
                total += torch.stack([loss.total.double(), torch.tensor(loss.count, device=device)])
        for g, base in zip(opt.param_groups, scheduled, strict=True):
            g["lr"] = base  # the scheduler steps from the un-warmed lr
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        all_reduce(info, total)
        train_seconds += seconds
        samples_seen += int(total[1])
        sched.step()
        train_loss = float(total[0] / total[1])
        if not np.isfinite(train_loss):
            raise FloatingPointError(
                f"epoch {epoch + 1}: training loss is {train_loss}; lower train.lr={cfg.lr} "
                "(the summed loss needs a smaller lr than the mean, see params.yaml)"
            )
        held_out = method.evaluate(device, info, cfg.amp)
        record = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            **{k: held_out[k] for k in method.record_keys},
            "lr": lr,
            "seconds": round(seconds, 3),
        }
        history.append(record)
        log.info(
            "epoch %d/%d: train %.4g, %s, lr %.3g, %.0f pairs/s",
            epoch + 1,
            cfg.epochs,
            train_loss,
            method.describe(record),
            lr,
            float(total[1]) / max(seconds, 1e-9),
        )
        if checkpoint is not None:
            states = all_gather_object(info, rng_state())
            if info.is_main:
                save_checkpoint(
                    checkpoint,
                    epoch=epoch + 1,
                    model=model,
                    optimizer=opt,
                    scheduler=sched,
                    scaler=scaler,
                    rng=states,
                    history=history,
                    key=key,
                    config=to_dict(cfg),
                )
            barrier(info)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, record)
    return FitResult(
        model=model,
        history=history,
        pairs_per_s=samples_seen / train_seconds if train_seconds else float("nan"),
        train_seconds=train_seconds,
        resumed_epoch=start_epoch,
        device=str(device),
        world_size=info.world_size,
        extra=method.extra(),
    )
