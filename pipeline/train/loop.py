"""The ``train`` stage: fit the bottom stream and the context module (paper section 3).

SGD with momentum and weight decay, a step learning rate (``lr`` times ``lr_gamma``
from epoch ``lr_step_epoch`` on), the squared-error loss summed or averaged over pairs.
Each epoch logs the training loss and the loss on the held-out pairs of
``data.eval_test_split``, then writes ``<paths.train>/checkpoint.pt`` atomically (model,
optimiser, scheduler, grad scaler, every RNG state, epoch, config, history);
``train.resume`` continues from it to the same weights as an uninterrupted run.

Losses in logs, history and metrics are *per pair*: the squared error summed over the
feature dimension, averaged over pairs, whatever ``train.loss`` (which only changes the
objective's scale, hence the step size).

Device: the GPU when present (``train.device: auto``), else the CPU. Several processes:
``torchrun --nproc_per_node=N stages/train.py`` runs DistributedDataParallel (nccl on
GPUs, gloo on CPUs) with a DistributedSampler; ``train.batch_size`` is the global batch,
split evenly over the processes, so N processes follow the single-process trajectory
(up to float summation order). Only rank 0 writes files.
"""

from __future__ import annotations

import csv
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler
from tqdm import tqdm

from pipeline.config import ConfigError, to_dict
from pipeline.devices import resolve_device
from pipeline.errors import DataError
from pipeline.io import atomic_path, canonical
from pipeline.models.context import assert_frozen, scn_loss
from pipeline.provenance import code_version, sha256_file
from pipeline.seed import seed_everything
from pipeline.train.config import TrainConfig
from pipeline.train.data import PairDataset, plain_attr, targets_provenance
from pipeline.train.model import SCN, build_scn, save_trained

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "scn-checkpoint/1"
# Keys of the train config that may change between an interrupted run and its resumption.
RESUME_FREE_KEYS = ("epochs", "resume", "device", "workers", "preload_max_mb")
EVAL_BATCH = 256


# ----------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Rank and world size of the current process group (1 process when none)."""
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistInfo(dist.get_rank(), world, local)
    return DistInfo()


def init_distributed_from_env(device_name: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE`` > 1), else none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return dist_info()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, "train.device", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    info = dist_info()
    log.info("DDP: rank %d of %d (%s)", info.rank, info.world_size, dist.get_backend())
    return info


# ----------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
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


def _rank_seed(seed: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


# ----------------------------------------------------------------------------- fitting


@dataclass
class FitResult:
    model: SCN
    history: list[dict[str, float]]
    pairs_per_s: float
    train_seconds: float
    resumed_epoch: int = 0
    device: str = "cpu"
    world_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


def _loader(ds: PairDataset, sampler, batch: int, workers: int, pin: bool) -> DataLoader:
    return DataLoader(
        ds,
        sampler=BatchSampler(sampler, batch, drop_last=False),
        batch_size=None,  # the dataset returns whole batches
        num_workers=workers,
        pin_memory=pin,
    )


@torch.no_grad()
def evaluate(
    model: SCN,
    ds: PairDataset,
    device: torch.device,
    from_trunk: bool,
    info: DistInfo | None = None,
    amp: bool = False,
) -> dict[str, float]:
    """Per-pair loss on every pair of ``ds`` (each process takes a shard; exact, no padding)
    and ``h3_var``: the total variance of h3 over the pairs (sum over dims of the variance
    across pairs; 0 when the context module predicts one constant, e.g. the mean target).

    Also how far the bottom stream has moved from the network it started as, measured on
    the bottom patches of the pairs against their cached ``features`` (the frozen top
    stream's representation, i.e. h1 before training): ``h1_drift`` =
    ||h1 - h1_0|| / ||h1_0|| and ``h1_norm_ratio`` = ||h1|| / ||h1_0|| (Frobenius norms
    over the pairs; 0 and 1 at the start). NaN when the dimensions differ.
    """
    info = info or DistInfo()
    was_training = model.training
    model.eval()
    idx = np.arange(info.rank, len(ds), info.world_size)
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum, count)
    # (||h1 - h1_0||^2, ||h1_0||^2, ||h1||^2) summed over the pairs
    drift = torch.zeros(3, dtype=torch.float64, device=device)
    moments = None  # (2, D): sum of h3, sum of h3^2
    comparable = ds.target_dim == model.context.v1.in_features
    for start in range(0, len(idx), EVAL_BATCH):
        rows = idx[start : start + EVAL_BATCH]
        batch = ds[rows]
        x, target = batch["x"].to(device), batch["target"].to(device)  # (B, ...), (B, D)
        offset = batch["offset"].to(device)  # (B, 8)
        with _autocast(device, amp):
            h1 = model.bottom(x, from_trunk)  # (B, D)
            h3 = model.context(h1, offset).float()  # (B, D_T)
        total[0] += scn_loss(h3, target, "sum").double()
        total[1] += len(x)
        if comparable:
            h1 = h1.double()  # (B, D)
            h1_0 = torch.from_numpy(ds.patch_features(ds.bottom[rows])).to(device).double()
            drift += torch.stack([(h1 - h1_0).pow(2).sum(), h1_0.pow(2).sum(), h1.pow(2).sum()])
        h3 = h3.double()  # (B, D)
        m = torch.stack([h3.sum(0), h3.pow(2).sum(0)])  # (2, D)
        moments = m if moments is None else moments + m
    if info.enabled:
        dist.all_reduce(total)
        dist.all_reduce(moments)
        dist.all_reduce(drift)
    model.train(was_training)
    n = total[1].clamp(min=1)
    mean = moments[0] / n  # (D,)
    h3_var = float((moments[1] / n - mean.pow(2)).clamp(min=0).sum())
    nan = float("nan")
    ok = comparable and float(drift[1]) > 0
    return {
        "loss": float(total[0] / n),
        "h3_var": h3_var,
        "h1_drift": float((drift[0] / drift[1]).sqrt()) if ok else nan,
        "h1_norm_ratio": float((drift[2] / drift[1]).sqrt()) if ok else nan,
    }


def without_wall_clock(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """The per-epoch records minus their ``seconds``, as stored in ``checkpoint.pt`` and
    ``model.pt``: a resumed or repeated run must write the same bytes, or DVC reruns
    ``classify`` and ``detect`` for nothing."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def target_variance(ds: PairDataset, center: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """(mean over the pairs of ||target - center||^2, the mean target (D,)).

    With ``center`` None it is the targets' own mean: the loss of the best constant
    prediction, the "predict-the-mean" baseline that a useful context module beats.
    """
    d = ds.target_dim
    total, sq = np.zeros(d), np.zeros(d)
    for start in range(0, len(ds), 4096):
        t = ds.patch_features(ds.top[start : start + 4096]).astype(np.float64)  # (b, D)
        total += t.sum(0)
        sq += (t**2).sum(0)
    n = max(len(ds), 1)
    mean = total / n  # (D,)
    c = mean if center is None else np.asarray(center, dtype=np.float64)
    # E||t - c||^2 = E||t||^2 - 2 c.E[t] + ||c||^2
    return float(sq.sum() / n - 2 * c @ mean + c @ c), mean


def _autocast(device: torch.device, amp: bool):
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=amp)


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
        log.warning("%s: not an SCN checkpoint; training from scratch", path)
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


def fit(
    model: SCN,
    train_set: PairDataset,
    test_set: PairDataset,
    cfg: TrainConfig,
    *,
    checkpoint: Path | None = None,
    meta: dict[str, Any] | None = None,
    on_epoch_start: Callable[[int], None] | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``train_set`` for ``cfg.epochs`` epochs; test on ``test_set``.

    Runs DDP when a process group is initialised (each process must call ``fit`` with
    the same arguments). ``checkpoint``: written each epoch by rank 0, and continued from
    when ``cfg.resume`` and it matches ``meta`` + the config. ``on_epoch_start(epoch)``
    runs sanity checks (e.g. the top stream is frozen); ``on_epoch_end(epoch, record)``
    sees each history record.
    """
    info = dist_info()
    device = resolve_device(cfg.device, "train.device", info.local_rank)
    if cfg.batch_size % info.world_size:
        raise ConfigError(
            f"train.batch_size: {cfg.batch_size} is not divisible by the {info.world_size} "
            "processes; allowed: a multiple of the world size"
        )
    if len(train_set) == 0:
        raise DataError(train_set.pairs_path, "no training pairs")
    if len(test_set) == 0:
        raise DataError(test_set.pairs_path, "no held-out pairs")
    from_trunk = train_set.source == "trunk"
    model.to(device)
    net: torch.nn.Module = model
    if info.enabled:
        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    head_params = [p for p in model.head.parameters() if p.requires_grad]
    context_params = [p for p in model.context.parameters() if p.requires_grad]
    opt = torch.optim.SGD(
        [
            {"params": head_params, "lr": cfg.lr},
            {"params": context_params, "lr": cfg.lr * cfg.context_lr_mult},
        ],
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [cfg.lr_step_epoch], gamma=cfg.lr_gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
    key = resume_key(cfg, meta or {})
    history: list[dict[str, float]] = []
    start_epoch = 0
    torch.manual_seed(_rank_seed(cfg.seed, info.rank))  # dropout etc. differ per process
    ckpt = load_checkpoint(checkpoint, key, cfg.epochs) if checkpoint and cfg.resume else None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        history, start_epoch = list(ckpt["history"]), int(ckpt["epoch"])
        states = ckpt["rng"]
        if len(states) == info.world_size:
            set_rng_state(states[info.rank])
        else:
            log.warning("checkpoint from %d processes, now %d: RNG reseeded", len(states),
                        info.world_size)  # fmt: skip
        log.info("resuming from %s at epoch %d of %d", checkpoint, start_epoch, cfg.epochs)

    sampler = DistributedSampler(
        train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed
    )
    per_rank = cfg.batch_size // info.world_size
    loader = _loader(train_set, sampler, per_rank, cfg.workers, device.type == "cuda")
    # DDP averages gradients over processes: scale a summed loss back to the global sum.
    loss_scale = float(info.world_size) if cfg.loss == "sum" else 1.0
    # the predict-the-mean baseline: a context module that ignores its inputs scores this
    test_var, _ = target_variance(test_set)
    _, train_mean = target_variance(train_set)
    test_var_train_mean, _ = target_variance(test_set, center=train_mean)
    log.info(
        "held-out targets: variance %.4g per pair (predicting the training mean: %.4g)",
        test_var,
        test_var_train_mean,
    )
    if ckpt is None and cfg.output_bias == "mean":
        # start from the predict-the-mean solution: the first steps then see zero-mean
        # residuals instead of the targets' large mean, which otherwise drives the
        # sigmoid units into saturation (a constant h3) at a useful learning rate
        with torch.no_grad():
            model.context.v2.bias.copy_(torch.as_tensor(train_mean, dtype=torch.float32))
    warmup_steps = cfg.warmup_epochs * len(loader)
    step = start_epoch * len(loader)
    train_seconds, pairs_seen = 0.0, 0
    for epoch in range(start_epoch, cfg.epochs):
        model.check_frozen()
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        sampler.set_epoch(epoch)
        model.train()
        lr = opt.param_groups[0]["lr"]
        total = torch.zeros(2, dtype=torch.float64, device=device)  # (loss sum, pairs)
        t0 = time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=None if info.is_main else True)  # fmt: skip
        scheduled = [g["lr"] for g in opt.param_groups]
        for batch in bar:
            if step < warmup_steps:  # linear warm-up of every group's scheduled lr
                for g, base in zip(opt.param_groups, scheduled, strict=True):
                    g["lr"] = base * (step + 1) / warmup_steps
            step += 1
            x = batch["x"].to(device, non_blocking=True)  # (b, ...) trunk rows or images
            offset = batch["offset"].to(device, non_blocking=True)  # (b, 8)
            target = batch["target"].to(device, non_blocking=True)  # (b, D)
            with _autocast(device, cfg.amp):
                h3 = net(x, offset, from_trunk)  # (b, D)
            loss = scn_loss(h3.float(), target, cfg.loss)  # scalar
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss * loss_scale).backward()
            scaler.step(opt)
            scaler.update()
            with torch.no_grad():
                per_pair = loss.detach() * (len(x) if cfg.loss == "mean" else 1)
                total += torch.stack([per_pair.double(), torch.tensor(len(x), device=device)])
        for g, base in zip(opt.param_groups, scheduled, strict=True):
            g["lr"] = base  # the scheduler steps from the un-warmed lr
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        if info.enabled:
            dist.all_reduce(total)
        train_seconds += seconds
        pairs_seen += int(total[1])
        sched.step()
        train_loss = float(total[0] / total[1])
        if not np.isfinite(train_loss):
            raise FloatingPointError(
                f"epoch {epoch + 1}: training loss is {train_loss}; lower train.lr={cfg.lr} "
                "(the summed loss needs a smaller lr than the mean, see params.yaml)"
            )
        test = evaluate(model, test_set, device, from_trunk, info, cfg.amp)
        test_loss = test["loss"]
        record = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "test_loss": test_loss,
            # 1 - test loss / variance of the test targets: > 0 beats predicting the mean
            "test_explained": 1.0 - test_loss / test_var if test_var > 0 else float("nan"),
            # std of h3 over the test pairs relative to the targets' (0: a constant h3)
            "h3_spread": float(np.sqrt(test["h3_var"] / test_var)) if test_var > 0 else 0.0,
            # how far h1 of the held-out bottom patches moved from the original network's
            "h1_drift": test["h1_drift"],
            "h1_norm_ratio": test["h1_norm_ratio"],
            "lr": lr,
            "seconds": round(seconds, 3),
        }
        history.append(record)
        log.info(
            "epoch %d/%d: train %.4g, test %.4g (%.1f%% of the variance explained), h3 "
            "spread %.3g, h1 drift %.3g (norm x%.3g), lr %.3g, %.0f pairs/s",
            epoch + 1,
            cfg.epochs,
            train_loss,
            test_loss,
            100 * record["test_explained"],
            record["h3_spread"],
            record["h1_drift"],
            record["h1_norm_ratio"],
            lr,
            float(total[1]) / max(seconds, 1e-9),
        )
        if checkpoint is not None:
            states = [rng_state()]
            if info.enabled:
                states = [None] * info.world_size
                dist.all_gather_object(states, rng_state())
            if info.is_main:
                payload = {
                    "format": CHECKPOINT_FORMAT,
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": states,
                    "history": without_wall_clock(history),
                    "key": key,
                    "config": to_dict(cfg),
                    "code_version": code_version(),
                }
                with atomic_path(checkpoint) as tmp:
                    torch.save(canonical(payload), tmp)
            if info.enabled:
                dist.barrier()
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, record)
    return FitResult(
        model=model,
        history=history,
        pairs_per_s=pairs_seen / train_seconds if train_seconds else float("nan"),
        train_seconds=train_seconds,
        resumed_epoch=start_epoch,
        device=str(device),
        world_size=info.world_size,
        extra={"test_target_variance": test_var, "test_loss_train_mean": test_var_train_mean},
    )


# ----------------------------------------------------------------------------- outputs


def write_history(
    history: list[dict[str, float]],
    csv_path: Path,
    png_path: Path,
    baseline: float | None = None,
) -> None:
    """The per-epoch losses as a CSV (a DVC plot) and a PNG loss curve, atomically.

    ``baseline``: the variance of the test targets (the loss of predicting their mean),
    drawn as a horizontal line.
    """
    fields = ["epoch", "train_loss", "test_loss", "test_explained", "h3_spread", "h1_drift",
              "h1_norm_ratio", "lr", "seconds"]  # fmt: skip
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k, "") for k in fields})

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [r["epoch"] for r in history]
    ax.plot(epochs, [r["train_loss"] for r in history], "o-", ms=3, label="train")
    ax.plot(epochs, [r["test_loss"] for r in history], "s-", ms=3, label="held-out test")
    if baseline is not None:
        ax.axhline(baseline, color="grey", ls="--", lw=1, label="test: predict the mean")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss per pair (squared error)")
    ax.set_title("SCN training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _split_files(params, split: str) -> tuple[Path, Path]:
    return (
        Path(params.paths.pairs) / f"{split}.h5",
        Path(params.paths.targets) / f"{split}.h5",
    )


def _image_files(params, split: str) -> dict[str, Path]:
    from pipeline.data.voc import open_split

    ds = open_split(params, split, check_images=False, stage="train")
    return {im.id: im.path for im in ds}


def _check_targets(path: Path, pairs: Path, params, backbone) -> dict[str, Any]:
    """Open the target cache only when it was built for this backbone, scope, weights,
    input size and pairs manifest; return its attributes."""
    from pipeline.targets.cache import expected_attrs, open_targets

    with open_targets(path, expected_attrs(backbone, params.network.scope, pairs)) as fh:
        return {k: plain_attr(v) for k, v in fh.attrs.items()}


def top_stream_check(backbone, ds: PairDataset, n: int = 4, rtol: float = 0.05) -> Callable:
    """A per-epoch check for training from images: the top stream (``backbone``) is frozen
    and still computes the cached targets of a few top patches (MoCo's sanity check)."""
    rows = np.unique(ds.top[:: max(1, len(ds) // n)][:n])

    def check(epoch: int) -> None:
        assert_frozen(backbone.model, "top stream")
        x = ds.crops(rows)  # (n, 3, S, S)
        feats = backbone.features(x)  # (n, D)
        cached = torch.from_numpy(ds.patch_features(rows))  # (n, D)
        err = float((feats - cached).norm() / cached.norm().clamp(min=1e-12))
        if err > rtol:
            raise DataError(
                ds.targets_path,
                f"the frozen top stream no longer reproduces the cached targets "
                f"(relative error {err:.3g} > {rtol}, epoch {epoch + 1})",
                kind="provenance_mismatch",
            )

    return check


def stage(params) -> dict:
    """Train the SCN from the pairs and target caches; write model.pt, plots, metrics."""
    from pipeline.backbones import build_backbone

    cfg: TrainConfig = params.train
    info = init_distributed_from_env(cfg.device)
    seed_everything(cfg.seed)
    scope = params.network.scope
    train_pairs, train_targets = _split_files(params, params.data.scn_split)
    test_pairs, test_targets = _split_files(params, params.data.eval_test_split)
    bb = build_backbone(params.backbone, params.network.weights, True, params.network.input_size)
    if scope not in bb.scopes:
        raise ConfigError(
            f"network.scope: {scope!r} is not a scope of {bb.name}; allowed: {', '.join(bb.scopes)}"
        )
    attrs = _check_targets(train_targets, train_pairs, params, bb)
    _check_targets(test_targets, test_pairs, params, bb)
    source = "trunk" if scope != "all" and PairDataset.has_trunk(train_targets) else "image"
    if source == "trunk" and attrs.get("trunk_layer") != bb.trunk_layer(scope):
        raise DataError(
            train_targets,
            f"trunk_layer={attrs.get('trunk_layer')!r}; scope {scope!r} needs "
            f"{bb.trunk_layer(scope)!r}",
            kind="provenance_mismatch",
        )
    crop = (bb.input_size, bb.mean, bb.std)
    sets = []
    for split, pairs, targets in (
        (params.data.scn_split, train_pairs, train_targets),
        (params.data.eval_test_split, test_pairs, test_targets),
    ):
        images = _image_files(params, split) if source == "image" else None
        sets.append(PairDataset(pairs, targets, source, images, crop, cfg.preload_max_mb))
    train_set, test_set = sets
    log.info("train: %s; test: %s", train_set.describe(), test_set.describe())
    model = build_scn(bb, scope, train_set.target_dim, cfg.hidden, cfg.use_offset, cfg.bn,
                      cfg.dropout)  # fmt: skip
    provenance = {
        "backbone": bb.name,
        "weights_sha256": bb.weights_sha256,
        "weights_path": bb.weights_path,
        "scope": scope,
        "source": source,
        "targets": targets_provenance(attrs),
        "targets_sha256": sha256_file(train_targets),
        "pairs_sha256": sha256_file(train_pairs),
        "code_version": code_version(),
    }
    out_dir = Path(params.paths.train)
    out_dir.mkdir(parents=True, exist_ok=True)
    check = top_stream_check(bb, train_set) if source == "image" else None
    result = fit(
        model,
        train_set,
        test_set,
        cfg,
        checkpoint=out_dir / "checkpoint.pt",
        meta={k: provenance[k] for k in ("backbone", "weights_sha256", "scope", "source",
                                         "targets_sha256", "pairs_sha256")},
        on_epoch_start=check,
    )  # fmt: skip
    metrics: dict[str, Any] = {}
    if info.is_main:
        config = {
            "train": to_dict(cfg),
            "network": to_dict(params.network),
            "backbone": params.backbone,
            "dataset": params.dataset,
            "proposal": params.proposal,
        }
        history = without_wall_clock(result.history)
        save_trained(out_dir / "model.pt", result.model.cpu(), bb, scope, config, provenance,
                     history)  # fmt: skip
        plots = Path(params.paths.plots)
        write_history(result.history, plots / "train_loss.csv", plots / "train_loss.png",
                      result.extra["test_target_variance"])  # fmt: skip
        last = result.history[-1]
        metrics = {
            "train_loss": last["train_loss"],
            "test_loss": last["test_loss"],
            # the predict-the-mean baseline and the share of it the model explains
            "test_target_variance": result.extra["test_target_variance"],
            "test_explained": last["test_explained"],
            "h3_spread": last["h3_spread"],
            # held-out h1 against the original's: ||h1 - h1_0|| / ||h1_0||, ||h1|| / ||h1_0||
            "h1_drift": last["h1_drift"],
            "h1_norm_ratio": last["h1_norm_ratio"],
            "epochs": last["epoch"],
            "resumed_from_epoch": result.resumed_epoch,
            "pairs_per_s": round(result.pairs_per_s, 1),
            "train_pairs": len(train_set),
            "test_pairs": len(test_set),
            "source": source,
            "device": result.device,
            "world_size": result.world_size,
        }
    if info.enabled:
        dist.barrier()
        dist.destroy_process_group()
    return metrics if info.is_main else None
