"""What a training method supplies to the shared loop (:func:`pipeline.train.loop.fit`).

The loop owns everything that does not depend on the objective: devices and DDP, the
optimiser (``train.optimizer`` over the method's parameter groups), the step learning
rate and its warm-up, the frozen warm-up of :meth:`Method.warmup_frozen`, model selection
and early stopping on :attr:`Method.select_key`, mixed precision, the sampler and the
DataLoader, the per-epoch history, checkpoints and resumption. A method owns the rest:

- ``model``: the module trained and checkpointed (wrapped in DDP by the loop);
- ``train_set``: a dataset indexed by a list of sample indices that returns a whole
  batch (a dict of tensors), as :class:`~pipeline.train.data.PairDataset` does;
- :meth:`Method.param_groups`: the optimiser's parameter groups and their learning rates;
- :meth:`Method.forward` and :meth:`Method.loss`: the loss of a batch;
- :meth:`Method.evaluate`: the held-out entries of each epoch's history record, one of
  which (:attr:`Method.select_key`) scores the epoch for model selection;
- :meth:`Method.warmup_frozen`: the parameters ``train.context_warmup_epochs`` freezes;
- :meth:`Method.save_trained` and :meth:`Method.metrics`: the trained network
  (``model.pt``) and the stage's metrics, for the train stage.

One module per method (``methods/scn.py``, ...), as solo-learn keeps one file per method
over a shared base.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from pipeline.train.config import TrainConfig
from pipeline.train.distributed import DistInfo


@dataclass
class FitResult:
    """What :func:`pipeline.train.loop.fit` returns.

    ``model`` holds the weights of epoch ``selected_epoch`` (the last epoch run, or with
    ``train.select: best`` the best one); ``best_epoch``: the epoch of the best
    :attr:`Method.select_key` (None when no epoch scored a finite value);
    ``stopped_early``: ``train.early_stop_patience`` ended the run before ``train.epochs``.
    """

    model: nn.Module
    history: list[dict[str, float]]
    pairs_per_s: float  # training samples per second of training time
    train_seconds: float
    resumed_epoch: int = 0
    device: str = "cpu"
    world_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    selected_epoch: int = 0
    best_epoch: int | None = None
    stopped_early: bool = False

    @property
    def selected(self) -> dict[str, float]:
        """The history record of the epoch whose weights ``model`` holds."""
        return self.history[self.selected_epoch - 1]


@dataclass
class BatchLoss:
    """The loss of one batch.

    ``value``: the scalar objective to back-propagate, summed or averaged over the batch
    as :attr:`Method.reduction` says; ``total``: the per-sample loss summed over the
    batch (detached, for the epoch's average, the history's ``train_loss``); ``count``:
    the samples in the batch.
    """

    value: torch.Tensor  # ()
    total: torch.Tensor  # ()
    count: int


def autocast(device: torch.device, amp: bool):
    """The loop's mixed precision (float16 on the GPU, bfloat16 on the CPU; off unless
    ``amp``), for the forward passes a method runs itself (held-out evaluation)."""
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=amp)


class Method(ABC):
    """A training objective: model, batches, loss, held-out metrics, trained output."""

    #: short name, for logs and plot titles
    name: ClassVar[str] = "method"
    #: the keys :meth:`evaluate` returns, in order; ``test_loss`` (the held-out loss in the
    #: units of ``train_loss``) first. Each history record is ``epoch``, ``train_loss``,
    #: these, ``lr``, ``seconds``.
    record_keys: ClassVar[tuple[str, ...]] = ("test_loss",)
    #: the y label of the loss curve
    loss_label: ClassVar[str] = "loss"
    #: the record key that scores an epoch for ``train.select: best`` and
    #: ``train.early_stop_patience``, and whether higher (``max``) or lower is better
    select_key: ClassVar[str] = "test_loss"
    select_mode: ClassVar[Literal["max", "min"]] = "min"
    #: the keys of ``self.provenance`` a checkpoint must match to be resumed
    resume_provenance: ClassVar[tuple[str, ...]] = ()

    model: nn.Module
    train_set: Dataset

    @property
    @abstractmethod
    def reduction(self) -> Literal["sum", "mean"]:
        """How :meth:`loss` reduces over the batch; with ``sum`` the loop scales the
        objective by the process count (DDP averages gradients over the processes)."""

    def check_data(self) -> None:  # noqa: B027 - optional hook
        """Raise :class:`~pipeline.errors.DataError` when a split cannot be trained on."""

    @abstractmethod
    def param_groups(self, cfg: TrainConfig) -> list[dict[str, Any]]:
        """The optimiser's parameter groups, each with its ``lr``; the first group's
        learning rate is the history's ``lr``."""

    def warmup_frozen(self) -> list[tuple[str, nn.Parameter]]:
        """The named parameters that ``train.context_warmup_epochs`` keeps frozen (no
        gradient, untouched by the optimiser) for the first epochs while the others learn;
        empty (the default) when the method has no such warm-up, and then a warm-up is
        refused."""
        return []

    def setup(self, device: torch.device, resumed: bool) -> None:  # noqa: B027
        """Before the first epoch, the model on ``device`` (and restored from a checkpoint
        when ``resumed``): baselines, initialisation that depends on the data."""

    def on_epoch_start(self, epoch: int) -> None:  # noqa: B027
        """Sanity checks at the start of each epoch (e.g. frozen parts stay frozen)."""

    def to_device(self, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, Any]:
        """A batch of ``train_set`` on ``device``."""
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    @abstractmethod
    def forward(self, net: nn.Module, batch: dict[str, Any]) -> Any:
        """The outputs of ``net`` (``model``, maybe wrapped in DDP) for a batch on the
        device, run in the loop's mixed precision."""

    @abstractmethod
    def loss(self, out: Any, batch: dict[str, Any]) -> BatchLoss:
        """The loss of a batch from the outputs of :meth:`forward` (full precision)."""

    @abstractmethod
    def evaluate(self, device: torch.device, info: DistInfo, amp: bool) -> dict[str, float]:
        """The held-out entries of an epoch's record (:attr:`record_keys`), on every
        held-out sample: each process takes a shard and the results are reduced."""

    def describe(self, record: dict[str, float]) -> str:
        """The held-out part of an epoch's log line."""
        return ", ".join(f"{k} {record[k]:.4g}" for k in self.record_keys)

    def extra(self) -> dict[str, Any]:
        """Method-specific values for :attr:`~pipeline.train.loop.FitResult.extra`."""
        return {}

    def baseline(self) -> tuple[str, float] | None:
        """(label, value) of a reference held-out loss drawn on the loss curve, or None."""
        return None

    def on_warmup_end(self, optimizer: torch.optim.Optimizer) -> None:  # noqa: B027
        """Called once when the context warm-up ends (before the first epoch in which the
        warm-up scope learns), e.g. to change a parameter group's learning rate."""

    def frozen_baseline(self) -> dict[str, Any] | None:
        """Metrics of a reference run with the bottom stream frozen (the SCN's frozen-feature
        baseline), run before the method's own training and leaving its model as it was;
        None when the method has none."""
        return None

    def resume_meta(self) -> dict[str, Any]:
        """Provenance a checkpoint must match, beside the train config, to be resumed: the
        :attr:`resume_provenance` keys of the method's ``provenance`` (none without one)."""
        provenance = getattr(self, "provenance", None)
        if provenance is None:
            return {}
        return {k: provenance[k] for k in self.resume_provenance}

    @abstractmethod
    def save_trained(
        self, path: Path, config: dict[str, Any], history: list[dict[str, float]]
    ) -> None:
        """Write the trained network (``model.pt``: at least the trained bottom stream)
        atomically, the same content giving the same bytes."""

    @abstractmethod
    def metrics(self, result: FitResult) -> dict[str, Any]:
        """The method's entries of the train stage's metrics (the loop adds the epochs,
        throughput, device and process count)."""
