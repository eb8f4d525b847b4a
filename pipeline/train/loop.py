"""The training loop, whatever the method (:mod:`pipeline.train.methods`).

The optimiser ``train.optimizer`` (:data:`OPTIMIZERS`: SGD with momentum, Adam, AdamW;
weight decay for each) over the method's parameter groups, a step learning rate (``lr``
times ``lr_gamma`` from epoch ``lr_step_epoch`` on) with an optional linear warm-up over
``warmup_epochs``, mixed precision on request. Each epoch logs the training loss and the
method's held-out metrics, appends them to the history, then writes ``checkpoint.pt``
atomically (:mod:`pipeline.train.checkpoint`); ``train.resume`` continues from it to the
same weights as an uninterrupted run.

Regime, for any method:

- ``context_warmup_epochs``: for the first N epochs the parameters the method names in
  :meth:`~pipeline.train.methods.base.Method.warmup_frozen` do not require gradients (no
  gradient, so the optimiser leaves them, their momentum and weight decay alone); the
  other parameters learn. Train/eval modes are left as configured (a BatchNorm with
  batch statistics still updates its running statistics). From epoch N + 1 on they learn.
- Model selection: each epoch is scored by the method's held-out
  :attr:`~pipeline.train.methods.base.Method.select_key` (higher or lower is better as
  its ``select_mode`` says; a non-finite score never counts as better; ties keep the
  earlier epoch). ``select: best`` ends the run with the best epoch's weights (also its
  buffers, e.g. BatchNorm statistics) instead of the last's; ``early_stop_patience: N``
  stops once N epochs have passed since the best one (since the start when none scored).
  With ``select: best`` the checkpoint also holds the best weights so far, and a resumed
  run selects as an uninterrupted one; a run that stopped early stays stopped when it is
  resumed (the stop follows from the history in the checkpoint).

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
from torch import nn
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


#: ``train.optimizer``: the optimiser over the method's parameter groups (each group's
#: ``lr`` overrides ``cfg.lr``). ``momentum`` is SGD's only; Adam adds the weight decay to
#: the gradient (L2), AdamW decays the weights directly (decoupled, Loshchilov & Hutter).
OPTIMIZERS: dict[str, Callable[[list[dict[str, Any]], TrainConfig], torch.optim.Optimizer]] = {
    "sgd": lambda groups, cfg: torch.optim.SGD(
        groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    ),
    "adam": lambda groups, cfg: torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay),
    "adamw": lambda groups, cfg: torch.optim.AdamW(
        groups, lr=cfg.lr, weight_decay=cfg.weight_decay
    ),
}


def build_optimizer(groups: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The ``cfg.optimizer`` of :data:`OPTIMIZERS` over ``groups``."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(
            f"train.optimizer: {cfg.optimizer!r} is not a valid choice; "
            f"allowed: {', '.join(OPTIMIZERS)}"
        )
    return OPTIMIZERS[cfg.optimizer](groups, cfg)


def best_epoch(history: list[dict[str, float]], key: str, mode: str, after: int = 0) -> int | None:
    """The epoch whose ``key`` is best (``mode`` ``max`` or ``min``): the earliest of equal
    scores; non-finite scores never count; only epochs after epoch ``after`` compete. None
    when no such epoch scored a finite value."""
    best, value = None, None
    for record in history:
        if int(record["epoch"]) <= after:
            continue
        v = float(record[key])
        if not np.isfinite(v):
            continue
        if value is None or (v > value if mode == "max" else v < value):
            best, value = int(record["epoch"]), v
    return best


def stops_early(
    history: list[dict[str, float]], best: int | None, patience: int, after: int = 0
) -> bool:
    """True when ``patience`` (> 0) epochs have passed since the best epoch (since epoch
    ``after``, the first that may be selected, when there is none) by the end of
    ``history``."""
    if patience <= 0 or not history:
        return False
    return int(history[-1]["epoch"]) - (best or after) >= patience


def selectable_after(cfg: TrainConfig) -> int:
    """The last epoch that model selection skips: the context warm-up's, whose bottom stream
    is still the original network, unless every epoch is a warm-up epoch (the frozen
    baseline, or a warm-up as long as the run: the original network is then selected)."""
    warm = cfg.context_warmup_epochs
    return warm if 0 < warm < cfg.epochs else 0


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


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
    quiet_warmup: bool = False,
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
    opt = build_optimizer(method.param_groups(cfg), cfg)
    frozen = method.warmup_frozen() if cfg.context_warmup_epochs else []
    if cfg.context_warmup_epochs and not frozen:
        raise ConfigError(
            f"train.context_warmup_epochs: {cfg.context_warmup_epochs}, but the {method.name} "
            "method names no parameters to freeze during a warm-up; allowed: 0"
        )
    trains = [p.requires_grad for _, p in frozen]
    if cfg.context_warmup_epochs >= cfg.epochs and not quiet_warmup:
        log.warning("train.context_warmup_epochs=%d >= train.epochs=%d: the warm-up scope "
                    "never trains", cfg.context_warmup_epochs, cfg.epochs)  # fmt: skip
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [cfg.lr_step_epoch], gamma=cfg.lr_gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
    key = resume_key(cfg, meta or {})
    history: list[dict[str, float]] = []
    after = selectable_after(cfg)
    start_epoch = 0
    torch.manual_seed(rank_seed(cfg.seed, info.rank))  # dropout etc. differ per process
    ckpt = load_checkpoint(checkpoint, key, cfg.epochs) if checkpoint and cfg.resume else None
    best_state: dict[str, torch.Tensor] | None = None  # the best epoch's, with select: best
    if ckpt is not None:
        history, start_epoch = restore_checkpoint(ckpt, model, opt, sched, scaler, info)
        best_state = ckpt.get("best_model")
        log.info("resuming from %s at epoch %d of %d", checkpoint, start_epoch, cfg.epochs)
    key_name, mode = method.select_key, method.select_mode
    if key_name not in method.record_keys or mode not in ("max", "min"):
        raise ValueError(f"{method.name}: select_key {key_name!r} must be one of its record "
                         f"keys {method.record_keys}, select_mode max or min")  # fmt: skip
    best = best_epoch(history, key_name, mode, after)

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
    stopped_early = False
    net, frozen_now = None, None
    for epoch in range(start_epoch, cfg.epochs):
        if stops_early(history, best, cfg.early_stop_patience, after):
            stopped_early = True
            log.info(
                "early stop after epoch %d of %d: %s has not improved for %d epochs (best: "
                "epoch %s)", len(history), cfg.epochs, key_name, cfg.early_stop_patience, best,
            )  # fmt: skip
            break
        freeze = epoch < cfg.context_warmup_epochs
        if freeze != frozen_now:  # (re)wrap: DDP registers the parameters needing grads
            for (_, p), trainable in zip(frozen, trains, strict=True):
                p.requires_grad_(trainable and not freeze)
            if frozen and freeze:
                if not quiet_warmup:
                    log.info("context warm-up: %d parameter tensors of %s frozen for epochs 1-%d",
                             len(frozen), method.name, cfg.context_warmup_epochs)  # fmt: skip
            elif frozen:
                log.info("context warm-up over: %d parameter tensors learn from epoch %d on",
                         len(frozen), epoch + 1)  # fmt: skip
                if frozen_now is not None or start_epoch == cfg.context_warmup_epochs:
                    method.on_warmup_end(opt)
            net = None  # release the old DDP wrapper (and its gradient hooks) first
            net = wrap(model, device, info)
            frozen_now = freeze
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
        best = best_epoch(history, key_name, mode, after)
        if cfg.select == "best" and best == epoch + 1:
            best_state = _cpu_state(model)
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
                    best_model=best_state if cfg.select == "best" else None,
                )
            barrier(info)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, record)
    for (_, p), trainable in zip(frozen, trains, strict=True):
        p.requires_grad_(trainable)  # the method's model as it came, whatever the warm-up
    selected = len(history)
    if cfg.select == "best":
        if best is None or best_state is None:
            log.warning("train.select=best: no epoch scored a finite %s; keeping the last "
                        "epoch's weights", key_name)  # fmt: skip
        elif best != selected:
            model.load_state_dict(best_state)
            selected = best
    if best is not None:
        log.info("best %s %.4g at epoch %d of %d run; model: epoch %d (train.select=%s)",
                 key_name, history[best - 1][key_name], best, len(history), selected,
                 cfg.select)  # fmt: skip
    return FitResult(
        model=model,
        history=history,
        pairs_per_s=samples_seen / train_seconds if train_seconds else float("nan"),
        train_seconds=train_seconds,
        resumed_epoch=start_epoch,
        device=str(device),
        world_size=info.world_size,
        extra=method.extra(),
        selected_epoch=selected,
        best_epoch=best,
        stopped_early=stopped_early,
    )
