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
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch

from pipeline.errors import DataError
from pipeline.models.context import assert_frozen, scn_loss
from pipeline.pairs.overlap import OVERLAP_IOU, SUBSETS, split_masks
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
    h1_cached: bool = False,
) -> dict[str, float]:
    """Per-pair loss on every pair of ``ds`` (each process takes a shard; exact, no padding)
    and ``h3_var``: the total variance of h3 over the pairs (sum over dims of the variance
    across pairs; 0 when the context module predicts one constant, e.g. the mean target).
    ``loss_<subset>``: the same loss over the pairs whose patches overlap and over the
    others (:data:`~pipeline.pairs.overlap.SUBSETS`; nan for an empty subset).

    Also how far the bottom stream has moved from the network it started as, measured on
    the bottom patches of the pairs against their cached ``features`` (the frozen top
    stream's representation, i.e. h1 before training): ``h1_drift`` =
    ||h1 - h1_0|| / ||h1_0|| and ``h1_norm_ratio`` = ||h1|| / ||h1_0|| (Frobenius norms
    over the pairs; 0 and 1 at the start). NaN when the dimensions differ.

    ``h1_cached``: the bottom stream is frozen and untrained, so h1 *is* the cached
    ``features`` of the bottom patch: read it instead of running the network.
    """
    info = info or DistInfo()
    was_training = model.training
    model.eval()
    idx = np.arange(info.rank, len(ds), info.world_size)
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum, count)
    subsets = split_masks(ds.pair_iou)
    # (loss sum, count) per subset, in SUBSETS order
    parts = torch.zeros(len(SUBSETS), 2, dtype=torch.float64, device=device)
    # (||h1 - h1_0||^2, ||h1_0||^2, ||h1||^2) summed over the pairs
    drift = torch.zeros(3, dtype=torch.float64, device=device)
    moments = None  # (2, D): sum of h3, sum of h3^2
    comparable = ds.target_dim == model.context.v1.in_features
    for start in range(0, len(idx), EVAL_BATCH):
        rows = idx[start : start + EVAL_BATCH]
        h1_0 = torch.from_numpy(ds.patch_features(ds.bottom[rows])) if comparable else None
        if h1_cached:
            offset = torch.from_numpy(ds.offset[rows]).to(device)  # (B, 8)
            target = torch.from_numpy(ds.target_features(ds.top[rows])).to(device)  # (B, D)
            h1 = h1_0.to(device)  # (B, D): the frozen bottom stream's h1
            with autocast(device, amp):
                h3 = model.context(h1, offset).float()  # (B, D_T)
        else:
            batch = ds[rows]
            x, target = batch["x"].to(device), batch["target"].to(device)  # (B, ...), (B, D)
            offset = batch["offset"].to(device)  # (B, 8)
            with autocast(device, amp):
                h1 = model.bottom(x, from_trunk)  # (B, D)
                h3 = model.context(h1, offset).float()  # (B, D_T)
        per_pair = (target - h3).pow(2).sum(dim=1).double()  # (B,) = scn_loss per pair
        total[0] += per_pair.sum()
        total[1] += len(rows)
        for k, name in enumerate(SUBSETS):
            mask = torch.from_numpy(subsets[name][rows]).to(device)
            parts[k, 0] += per_pair[mask].sum()
            parts[k, 1] += mask.sum()
        if comparable:
            h1 = h1.double()  # (B, D)
            h1_0 = h1_0.to(device).double()
            drift += torch.stack([(h1 - h1_0).pow(2).sum(), h1_0.pow(2).sum(), h1.pow(2).sum()])
        h3 = h3.double()  # (B, D)
        m = torch.stack([h3.sum(0), h3.pow(2).sum(0)])  # (2, D)
        moments = m if moments is None else moments + m
    all_reduce(info, total, moments, drift, parts)
    model.train(was_training)
    n = total[1].clamp(min=1)
    mean = moments[0] / n  # (D,)
    h3_var = float((moments[1] / n - mean.pow(2)).clamp(min=0).sum())
    nan = float("nan")
    ok = comparable and float(drift[1]) > 0
    return {
        "loss": float(total[0] / n),
        **{
            f"loss_{name}": float(parts[k, 0] / parts[k, 1]) if parts[k, 1] > 0 else nan
            for k, name in enumerate(SUBSETS)
        },
        "h3_var": h3_var,
        "h1_drift": float((drift[0] / drift[1]).sqrt()) if ok else nan,
        "h1_norm_ratio": float((drift[2] / drift[1]).sqrt()) if ok else nan,
    }


def target_variance(
    ds: PairDataset, center: np.ndarray | None = None, mask: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """(mean over the pairs of ||target - center||^2, the mean target (D,)).

    With ``center`` None it is the targets' own mean: the loss of the best constant
    prediction, the "predict-the-mean" baseline that a useful context module beats.
    ``mask`` (M,) bool: over those pairs only (nan and zeros when there are none).
    """
    d = ds.target_dim
    total, sq = np.zeros(d), np.zeros(d)
    tops = ds.top if mask is None else ds.top[np.asarray(mask, dtype=bool)]
    for start in range(0, len(tops), 4096):
        t = ds.target_features(tops[start : start + 4096]).astype(np.float64)  # (b, D)
        total += t.sum(0)
        sq += (t**2).sum(0)
    if len(tops) == 0:
        return float("nan"), total
    n = len(tops)
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
        # test_explained over the held-out pairs whose patches overlap (IoU >= 0.05) and
        # over the others, where context is the only signal
        "test_explained_overlap",
        "test_explained_nonoverlap",
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
        self.test_var_subset: dict[str, float] = {}
        self.h1_cached = False  # this epoch reads h1 from the target cache

    @property
    def cached_h1_exact(self) -> bool:
        """Whether the frozen, untrained bottom stream's h1 is the cached ``features`` of
        its patch (up to float rounding): the head runs as at inference (BatchNorm with
        its running statistics, no dropout) and h1 has the targets' dimension. Then the
        epochs in which the bottom stream is frozen (the context warm-up, the frozen
        baseline) run only the context module."""
        return (
            self.cfg.bn == "frozen"
            and not self.cfg.dropout
            and self.train_set.target_dim == self.model.context.v1.in_features
        )

    def bottom_frozen(self) -> bool:
        """Whether no parameter of the bottom stream's head learns right now."""
        return not any(p.requires_grad for p in self.model.head.parameters())

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

    def on_warmup_end(self, optimizer: torch.optim.Optimizer) -> None:
        """``train.context_lr_after_warmup``: slow (or stop, at 0) the context module once
        the bottom stream starts learning, so that h1 has to move towards what the context
        module already reads rather than the module chasing a moving h1."""
        mult = self.cfg.context_lr_after_warmup
        if mult != 1.0:
            group = optimizer.param_groups[1]  # the context module (param_groups)
            group["lr"] *= mult
            if mult == 0:
                for p in group["params"]:
                    p.requires_grad_(False)
            log.info("context warm-up over: the context module's lr x %g (now %.3g)%s", mult,
                     group["lr"], ", frozen" if mult == 0 else "")  # fmt: skip

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
        for name, mask in split_masks(self.test_set.pair_iou).items():
            self.test_var_subset[name], _ = target_variance(self.test_set, mask=mask)
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
        # the loop has set which parameters learn this epoch (context warm-up)
        self.h1_cached = self.cached_h1_exact and self.bottom_frozen()
        self.train_set.h1_cached = self.h1_cached
        if self.h1_cached:
            log.debug("epoch %d: bottom stream frozen, h1 read from the target cache", epoch + 1)

    def forward(self, net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # x (b, ...) trunk rows or images (or h1 (b, D) when cached), offset (b, 8) -> h3 (b, D)
        return net(batch["x"], batch["offset"], self.from_trunk, self.h1_cached)

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> BatchLoss:
        n = len(batch["x"])
        loss = scn_loss(out.float(), batch["target"], self.cfg.loss)  # scalar
        total = loss.detach() * self.loss_factor(n)  # summed over the pairs of the batch
        return BatchLoss(loss, total, n)

    def evaluate(self, device: torch.device, info: DistInfo, amp: bool) -> dict[str, float]:
        cached = self.cached_h1_exact and self.bottom_frozen()
        test = evaluate(self.model, self.test_set, device, self.from_trunk, info, amp, cached)
        var = self.test_var
        nan = float("nan")
        sub = {
            f"test_explained_{name}": 1.0 - test[f"loss_{name}"] / v if v > 0 else nan
            for name, v in self.test_var_subset.items()
        }
        return {
            **sub,
            "test_loss": test["loss"],
            "test_explained": 1.0 - test["loss"] / var if var > 0 else nan,
            "h3_spread": float(np.sqrt(test["h3_var"] / var)) if var > 0 else 0.0,
            "h1_drift": test["h1_drift"],
            "h1_norm_ratio": test["h1_norm_ratio"],
        }

    def describe(self, record: dict[str, float]) -> str:
        return (
            f"test {record['test_loss']:.4g} ({100 * record['test_explained']:.1f}% of the "
            f"variance explained; non-overlapping pairs "
            f"{100 * record['test_explained_nonoverlap']:.2f}%), h3 spread "
            f"{record['h3_spread']:.3g}, h1 drift "
            f"{record['h1_drift']:.3g} (norm x{record['h1_norm_ratio']:.3g})"
        )

    def extra(self) -> dict[str, Any]:
        return {"test_target_variance": self.test_var,
                "test_loss_train_mean": self.test_var_train_mean,
                **{f"test_target_variance_{k}": v
                   for k, v in self.test_var_subset.items()}}  # fmt: skip

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
            # the same on the held-out pairs whose patches overlap / do not (IoU 0.05)
            "test_explained_overlap": last["test_explained_overlap"],
            "test_explained_nonoverlap": last["test_explained_nonoverlap"],
            "test_share_overlap": round(float(np.mean(self.test_set.pair_iou >= OVERLAP_IOU)), 4),
            "h3_spread": last["h3_spread"],
            # held-out h1 against the original's: ||h1 - h1_0|| / ||h1_0||, ||h1|| / ||h1_0||
            "h1_drift": last["h1_drift"],
            "h1_norm_ratio": last["h1_norm_ratio"],
            "train_pairs": len(self.train_set),
            "test_pairs": len(self.test_set),
            "source": self.train_set.source,
            "pairs": "shuffled" if self.train_set.shuffled else "real",
            "target": self.train_set.target_norm,
        }

    def frozen_baseline(self) -> dict[str, Any] | None:
        """The frozen-feature baseline (``train.frozen_baseline``): the same context module
        (the same initial weights), settings, epochs and selection, trained on the frozen
        h1 of the original network; the bottom stream never learns. Run before the SCN's
        own training on this method's model, whose whole state (weights and buffers) is
        restored afterwards, so the SCN trains exactly as without it.

        Returns its metrics (``frozen_*``, see :meth:`metrics`), or None when switched off.
        """
        if not self.cfg.frozen_baseline:
            return None
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        # every epoch a warm-up epoch: the head is frozen throughout
        cfg = replace(self.cfg, context_warmup_epochs=self.cfg.epochs, resume=False)
        base = SCNMethod(self.model, self.train_set, self.test_set, cfg, check=self.check)
        log.info("frozen-feature baseline: the context module alone on the original h1 "
                 "(%d epochs%s)", cfg.epochs,
                 ", h1 from the target cache" if base.cached_h1_exact else "")  # fmt: skip
        try:
            result = fit_method(base, cfg, checkpoint=None, quiet_warmup=True)
        finally:
            self.model.load_state_dict(state)
            self.train_set.h1_cached = False
        last = result.selected
        keys = ("test_explained", "test_explained_overlap", "test_explained_nonoverlap",
                "test_loss", "h3_spread", "h1_drift")  # fmt: skip
        return {
            **{f"frozen_{k}": last[k] for k in keys},
            "frozen_selected_epoch": result.selected_epoch,
            "frozen_epochs_run": result.history[-1]["epoch"],
            "frozen_history": [
                {k: r[k] for k in ("epoch", "train_loss", *keys)} for r in result.history
            ],
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


def _image_files(
    dataset_ref: DatasetRef, split: str, manifest: Path | None = None, ids: list[str] = ()
) -> dict[str, Path]:
    """The image files of ``split`` by id (``data.scn_images`` for the SCN split when set,
    the images of ``ids`` checked against the proposals stage's ``manifest``)."""
    from pipeline.data.images import check_scn_images, open_scn_split

    ds = open_scn_split(dataset_ref, split, check_images=False, stage="train")
    if manifest is not None:
        check_scn_images(dataset_ref, ds, ids, manifest)
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
        images = None
        if source == "image":
            from pipeline.targets.cache import read_patches

            ids = read_patches(pairs).image_ids
            images = _image_files(dataset_ref, split, paths.scn_images_manifest, ids)
        # the control shuffles the training pairs only: the held-out pairs stay real
        shuffle = cfg.seed if cfg.pairs == "shuffled" and not sets else None
        sets.append(PairDataset(pairs, targets, source, images, crop, cfg.preload_max_mb,
                                target_norm=cfg.target, shuffle_seed=shuffle))  # fmt: skip
    train_set, test_set = sets
    if cfg.pairs == "shuffled":
        log.info("train.pairs=shuffled (null-objective control): every training bottom patch "
                 "is paired with the top patch of a pair from another image")  # fmt: skip
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
