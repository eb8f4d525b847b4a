"""The spatial context network as a training method (paper section 3).

Model: :class:`~pipeline.train.model.SCN`, the bottom stream (frozen trunk + trained
head) and the context module. Batches: :class:`~pipeline.train.data.PairDataset`, the
bottom input of patch j, the offset o_ij and the cached top-stream features of patch i.
Loss: the squared error ``||target - h3||^2`` summed over the pairs, averaged over them,
or averaged over pairs and dimensions (``train.loss``, which only changes the objective's
scale, hence the SGD step size; the sum-equivalent lr is logged at the start). The
context module learns at ``lr * context_lr_mult``; ``output_bias: mean`` starts b2 at the
mean training target. ``train.context_warmup_epochs`` freezes the bottom stream's
trainable head (:meth:`SCNMethod.warmup_frozen`) while the context module learns; model
selection scores epochs by ``test_explained``.

Losses in logs, history and metrics are *per pair*: the squared error summed over the
feature dimension, averaged over pairs, whatever ``train.loss``. The held-out metrics
of each epoch: the loss, the share of the held-out targets' variance it explains (> 0
beats predicting the mean), the spread of h3 and the drift of h1 from the network the
bottom stream started as (:func:`evaluate`). The stage's metrics describe the epoch whose
weights ``model.pt`` holds (the last, or the best with ``train.select: best``).

:func:`build_method` builds the method for the train stage (backbone, target caches,
pairs, provenance); :func:`fit` trains a given SCN on given pair sets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch

from pipeline.errors import DataError
from pipeline.models.context import assert_frozen, scn_loss
from pipeline.provenance import code_version, sha256_file
from pipeline.train.config import TrainConfig
from pipeline.train.data import PairDataset, plain_attr, targets_provenance
from pipeline.train.distributed import DistInfo, all_reduce
from pipeline.train.loop import FitResult
from pipeline.train.loop import fit as fit_method
from pipeline.train.methods.base import BatchLoss, Method, autocast
from pipeline.train.model import SCN, build_scn, save_trained

if TYPE_CHECKING:
    from pipeline.artifacts import PathsConfig
    from pipeline.backbones.config import NetworkConfig
    from pipeline.data.voc import DatasetRef

log = logging.getLogger(__name__)

EVAL_BATCH = 256
# the checkpoint continues only the run of the same backbone, weights, scope, input and data
RESUME_PROVENANCE = ("backbone", "weights_sha256", "scope", "source", "targets_sha256",
                     "pairs_sha256")  # fmt: skip


# ----------------------------------------------------------------------------- metrics


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
        with autocast(device, amp):
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
    all_reduce(info, total, moments, drift)
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


# ----------------------------------------------------------------------------- method


class SCNMethod(Method):
    """Predict the cached top-stream features of patch i from patch j and the offset.

    ``backbone``, ``scope`` and ``provenance`` are needed only to write ``model.pt``
    (:meth:`save_trained`; the train stage's :func:`build_method` sets them);
    ``check``: an extra per-epoch check (e.g. :func:`top_stream_check`).
    """

    name: ClassVar[str] = "SCN"
    resume_provenance: ClassVar[tuple[str, ...]] = RESUME_PROVENANCE
    record_keys: ClassVar[tuple[str, ...]] = (
        "test_loss",
        # 1 - test loss / variance of the test targets: > 0 beats predicting the mean
        "test_explained",
        # std of h3 over the test pairs relative to the targets' (0: a constant h3)
        "h3_spread",
        # how far h1 of the held-out bottom patches moved from the original network's
        "h1_drift",
        "h1_norm_ratio",
    )
    loss_label: ClassVar[str] = "loss per pair (squared error)"
    select_key: ClassVar[str] = "test_explained"
    select_mode: ClassVar[Literal["max", "min"]] = "max"

    def __init__(
        self,
        model: SCN,
        train_set: PairDataset,
        test_set: PairDataset,
        cfg: TrainConfig,
        *,
        backbone=None,
        scope: str | None = None,
        provenance: dict[str, Any] | None = None,
        check: Callable[[int], None] | None = None,
    ):
        self.model, self.train_set, self.test_set, self.cfg = model, train_set, test_set, cfg
        self.backbone, self.scope, self.provenance = backbone, scope, provenance
        self.check = check
        self.from_trunk = train_set.source == "trunk"
        self.test_var = self.test_var_train_mean = float("nan")

    @property
    def reduction(self) -> Literal["sum", "mean"]:
        return "sum" if self.cfg.loss == "sum" else "mean"

    def loss_factor(self, batch_size: int) -> int:
        """How many times smaller ``train.loss`` is than the summed loss on a full batch:
        1 (``sum``), B (``mean``), B x D (``element_mean``); with SGD, ``lr`` on it takes
        the step of ``lr / factor`` on the sum."""
        d = self.train_set.target_dim
        return {"sum": 1, "mean": batch_size, "element_mean": batch_size * d}[self.cfg.loss]

    def check_data(self) -> None:
        if len(self.train_set) == 0:
            raise DataError(self.train_set.pairs_path, "no training pairs")
        if len(self.test_set) == 0:
            raise DataError(self.test_set.pairs_path, "no held-out pairs")

    def param_groups(self, cfg: TrainConfig) -> list[dict[str, Any]]:
        head = [p for p in self.model.head.parameters() if p.requires_grad]
        context = [p for p in self.model.context.parameters() if p.requires_grad]
        return [
            {"params": head, "lr": cfg.lr},
            {"params": context, "lr": cfg.lr * cfg.context_lr_mult},
        ]

    def warmup_frozen(self) -> list[tuple[str, torch.nn.Parameter]]:
        """The bottom stream's trainable head: h1 stays the original network's during the
        warm-up while the context module learns."""
        return [(f"head.{n}", p) for n, p in self.model.head.named_parameters() if p.requires_grad]

    def setup(self, device: torch.device, resumed: bool) -> None:
        cfg = self.cfg
        b, d = cfg.batch_size, self.train_set.target_dim
        if cfg.optimizer == "sgd":
            sum_lr = cfg.lr / self.loss_factor(b)  # the same SGD step on the summed loss
            log.info(
                "train.loss=%s, lr %.3g: with SGD the step of lr %.3g on the summed loss (the "
                "paper's objective, at lr 1e-3), %.3g on the per-pair mean, %.3g on the "
                "per-element mean (batch %d, %d target dims)",
                cfg.loss, cfg.lr, sum_lr, sum_lr * b, sum_lr * b * d, b, d,
            )  # fmt: skip
        else:
            log.info("train.loss=%s, lr %.3g with %s: the step barely depends on the loss scale",
                     cfg.loss, cfg.lr, cfg.optimizer)  # fmt: skip
        # the predict-the-mean baseline: a context module that ignores its inputs scores this
        self.test_var, _ = target_variance(self.test_set)
        _, train_mean = target_variance(self.train_set)
        self.test_var_train_mean, _ = target_variance(self.test_set, center=train_mean)
        log.info(
            "held-out targets: variance %.4g per pair (predicting the training mean: %.4g)",
            self.test_var,
            self.test_var_train_mean,
        )
        if not resumed and self.cfg.output_bias == "mean":
            # start from the predict-the-mean solution: the first steps then see zero-mean
            # residuals instead of the targets' large mean, which otherwise drives the
            # sigmoid units into saturation (a constant h3) at a useful learning rate
            with torch.no_grad():
                self.model.context.v2.bias.copy_(torch.as_tensor(train_mean, dtype=torch.float32))

    def on_epoch_start(self, epoch: int) -> None:
        self.model.check_frozen()
        if self.check is not None:
            self.check(epoch)

    def forward(self, net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # x (b, ...) trunk rows or images, offset (b, 8) -> h3 (b, D)
        return net(batch["x"], batch["offset"], self.from_trunk)

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> BatchLoss:
        n = len(batch["x"])
        loss = scn_loss(out.float(), batch["target"], self.cfg.loss)  # scalar
        total = loss.detach() * self.loss_factor(n)  # summed over the pairs of the batch
        return BatchLoss(loss, total, n)

    def evaluate(self, device: torch.device, info: DistInfo, amp: bool) -> dict[str, float]:
        test = evaluate(self.model, self.test_set, device, self.from_trunk, info, amp)
        var = self.test_var
        return {
            "test_loss": test["loss"],
            "test_explained": 1.0 - test["loss"] / var if var > 0 else float("nan"),
            "h3_spread": float(np.sqrt(test["h3_var"] / var)) if var > 0 else 0.0,
            "h1_drift": test["h1_drift"],
            "h1_norm_ratio": test["h1_norm_ratio"],
        }

    def describe(self, record: dict[str, float]) -> str:
        return (
            f"test {record['test_loss']:.4g} ({100 * record['test_explained']:.1f}% of the "
            f"variance explained), h3 spread {record['h3_spread']:.3g}, h1 drift "
            f"{record['h1_drift']:.3g} (norm x{record['h1_norm_ratio']:.3g})"
        )

    def extra(self) -> dict[str, Any]:
        return {"test_target_variance": self.test_var,
                "test_loss_train_mean": self.test_var_train_mean}  # fmt: skip

    def baseline(self) -> tuple[str, float]:
        return "test: predict the mean", self.test_var

    def save_trained(
        self, path: Path, config: dict[str, Any], history: list[dict[str, float]]
    ) -> None:
        if self.backbone is None or self.scope is None or self.provenance is None:
            raise ValueError("SCNMethod.save_trained needs the backbone, scope and provenance")
        save_trained(path, self.model.cpu(), self.backbone, self.scope, config, self.provenance,
                     history)  # fmt: skip

    def metrics(self, result: FitResult) -> dict[str, Any]:
        last = result.selected  # the epoch model.pt holds
        return {
            "train_loss": last["train_loss"],
            "test_loss": last["test_loss"],
            # the predict-the-mean baseline and the share of it the model explains
            "test_target_variance": result.extra["test_target_variance"],
            "test_explained": last["test_explained"],
            "h3_spread": last["h3_spread"],
            # held-out h1 against the original's: ||h1 - h1_0|| / ||h1_0||, ||h1|| / ||h1_0||
            "h1_drift": last["h1_drift"],
            "h1_norm_ratio": last["h1_norm_ratio"],
            "train_pairs": len(self.train_set),
            "test_pairs": len(self.test_set),
            "source": self.train_set.source,
        }


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
    """Train the SCN ``model`` on ``train_set`` for ``cfg.epochs`` epochs; test on
    ``test_set`` (:func:`pipeline.train.loop.fit` with an :class:`SCNMethod`)."""
    return fit_method(
        SCNMethod(model, train_set, test_set, cfg),
        cfg,
        checkpoint=checkpoint,
        meta=meta,
        on_epoch_start=on_epoch_start,
        on_epoch_end=on_epoch_end,
    )


# ----------------------------------------------------------------------------- stage


def _image_files(dataset_ref: DatasetRef, split: str) -> dict[str, Path]:
    from pipeline.data.voc import open_split

    ds = open_split(dataset_ref, split, check_images=False, stage="train")
    return {im.id: im.path for im in ds}


def _check_targets(path: Path, pairs: Path, scope: str, backbone) -> dict[str, Any]:
    """Open the target cache only when it was built for this backbone, scope, weights,
    input size and pairs manifest; return its attributes."""
    from pipeline.targets.cache import expected_attrs, open_targets

    with open_targets(path, expected_attrs(backbone, scope, pairs)) as fh:
        return {k: plain_attr(v) for k, v in fh.attrs.items()}


def build_method(
    dataset_ref: DatasetRef,
    backbone: str,
    net: NetworkConfig,
    cfg: TrainConfig,
    splits: tuple[str, str],
    paths: PathsConfig,
) -> SCNMethod:
    """The SCN of the train stage: its bottom stream starts from ``backbone``'s weights;
    pairs and targets of ``splits[0]`` (the SCN split) to train on, of ``splits[1]`` held
    out; trained from the trunk cache when there is one."""
    from pipeline.backbones import build_backbone

    scope = net.scope
    train_pairs, train_targets = paths.pairs_file(splits[0]), paths.targets_file(splits[0])
    test_pairs, test_targets = paths.pairs_file(splits[1]), paths.targets_file(splits[1])
    bb = build_backbone(backbone, net.weights, True, net.input_size)
    attrs = _check_targets(train_targets, train_pairs, scope, bb)
    _check_targets(test_targets, test_pairs, scope, bb)
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
        (splits[0], train_pairs, train_targets),
        (splits[1], test_pairs, test_targets),
    ):
        images = _image_files(dataset_ref, split) if source == "image" else None
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
    check = top_stream_check(bb, train_set) if source == "image" else None
    return SCNMethod(model, train_set, test_set, cfg, backbone=bb, scope=scope,
                     provenance=provenance, check=check)  # fmt: skip
