"""Configuration of the train stage: the loop and the SCN (``train``), Doersch et al.
(``doersch``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.config import ConfigError, device_param, param


@dataclass(frozen=True)
class TrainConfig:
    """Paper defaults (section 3): SGD, batch 64, lr 1e-3 -> 1e-4 after 100 of 200 epochs,
    weight decay 5e-4. The embedded default trains fewer epochs (see params.yaml).

    ``loss``: the scale of the squared error, for a batch of B pairs and targets of D
    dimensions. ``sum`` (the paper's objective, as Lua Torch's ``nn.MSECriterion`` with
    ``sizeAverage = false``) sums over the D dimensions and the B pairs; ``mean`` averages
    the per-pair error over the pairs (B times smaller); ``element_mean`` averages over
    pairs and dimensions (B x D times smaller; ``MSECriterion``'s default, PyTorch's
    ``mse_loss``). The minimiser is the same; with SGD the step scales with the loss, so
    ``lr`` on ``mean`` takes the step of ``lr / B`` on ``sum``, and ``lr`` on
    ``element_mean`` that of ``lr / (B x D)``: the paper's 1e-3 on ``sum`` is 1e-3 x B on
    ``mean`` and 1e-3 x B x D on ``element_mean``; read the other way, if the paper's 1e-3
    was on Torch's default element mean, it is 1e-3 / (B x D) on ``sum``. Adam and AdamW
    are nearly invariant to the loss scale (up to their epsilon and, for Adam, the
    coupled weight decay). The SCN logs the sum-equivalent lr at the start.

    Regime: ``optimizer`` (``momentum`` is SGD's only); ``context_warmup_epochs``: the
    method's warm-up scope (the SCN: the bottom stream's trainable head) is frozen for
    the first N epochs while the rest (the context module) learns; ``select`` and
    ``early_stop_patience``: model selection on the method's held-out score (the SCN:
    ``test_explained``), evaluated after every epoch.
    """

    seed: int = param(0, ge=0)
    epochs: int = param(200, ge=1)
    batch_size: int = param(64, ge=1, help="global batch (split over DDP processes)")
    lr: float = param(1e-3, gt=0)
    lr_step_epoch: int = param(100, ge=1, help="multiply lr by lr_gamma after this epoch")
    lr_gamma: float = param(0.1, gt=0, le=1)
    optimizer: Literal["sgd", "adam", "adamw"] = param(
        "sgd", help="sgd (paper, with momentum), adam (L2 weight decay), adamw (decoupled)"
    )
    momentum: float = param(0.9, ge=0, lt=1, help="SGD momentum (unused by adam and adamw)")
    weight_decay: float = param(5e-4, ge=0, help="every optimiser; adamw decouples it")
    hidden: int = param(1024, ge=1, help="size of h2 in the context module")
    use_offset: bool = param(True, help="false: ablation without the offset input (Fig. 3)")
    loss: Literal["sum", "mean", "element_mean"] = param(
        "sum", help="squared error summed (paper), averaged over pairs, or over pairs and dims"
    )
    context_lr_mult: float = param(
        1.0, gt=0, help="learning rate of the context module = lr * context_lr_mult"
    )
    context_lr_after_warmup: float = param(
        1.0,
        ge=0,
        help="once the context warm-up ends, the context module's learning rate is "
        "multiplied by this (1: unchanged, 0: the context module stays as the warm-up left it)",
    )
    bn: Literal["frozen", "batch"] = param(
        "frozen", help="BatchNorm of the trained head: frozen running statistics or batch ones"
    )
    dropout: bool = param(False, help="dropout/drop-connect in the trained head while training")
    output_bias: Literal["mean", "zero"] = param(
        "zero", help="initial b2 of the context module: zero (paper) or the mean training target"
    )
    warmup_epochs: int = param(0, ge=0, help="linear learning-rate warm-up over these epochs")
    context_warmup_epochs: int = param(
        0, ge=0, help="freeze the bottom stream for these first epochs: only the context learns"
    )
    select: Literal["last", "best"] = param(
        "last", help="model.pt: the last epoch's weights or the best held-out epoch's"
    )
    early_stop_patience: int = param(
        0, ge=0, help="stop after this many epochs without a better held-out score; 0: off"
    )
    pairs: Literal["real", "shuffled"] = param(
        "real",
        help="real, or shuffled: the null-objective control, each training bottom patch "
        "paired with the top patch of a pair from another image (offsets unchanged)",
    )
    target: Literal["raw", "layer_norm"] = param(
        "raw",
        help="raw top-stream features, or each target layer-normalised over its dimensions "
        "(I-JEPA's target normalisation; an ablation beyond the paper)",
    )
    frozen_baseline: bool = param(
        True,
        help="also train the same context module on the frozen h1 (the bottom stream "
        "untouched) and report the fine-tuning gain over it",
    )
    device: str = device_param()
    amp: bool = param(False, help="mixed precision (float16 on the GPU, bfloat16 on the CPU)")
    workers: int = param(0, ge=0, help="DataLoader worker processes")
    resume: bool = param(True, help="continue from the last checkpoint when present")
    preload_max_mb: int = param(
        2048, ge=0, help="read cached targets/trunk arrays up to this size into memory"
    )


@dataclass(frozen=True)
class DoerschConfig:
    """Doersch et al.'s context prediction (``method: doersch``; the ``doersch`` section).

    Defaults are the paper's values (ICCV 2015 section 3 and the authors' ``train.py``):
    96 px patches in a 3x3 grid with 48 px gaps, each patch jittered by up to 7 px, the
    image resized to 150K-450K pixels; colour dropping against chromatic aberration;
    fc7 4096 and fc8 4096 over the concatenated pair, then the 8-way classifier.
    ``patch``, ``gap`` and ``jitter`` are pixels of the image *resized* to a pixel count
    drawn from ``image_pixels``, so they scale with the image (a grid that does not fit
    is scaled down until it does). ``lr``, ``optimizer`` and ``weight_decay`` replace
    ``train.*``'s, so the SCN's regime (issue 23: Adam at 1e-5 without weight decay) does
    not carry over to a step size chosen for SGD; the loop's other settings (momentum, lr
    step, warm-up, epochs, batch, bn, dropout, device, ...) are ``train.*``.
    """

    seed: int = param(0, ge=0, help="seeds the fixed set of sampled grids")
    grids_per_image: int = param(
        4, ge=1, help="3x3 grids sampled once per image, 8 pairs each (authors' code: 4)"
    )
    patch: float = param(96.0, gt=0, help="patch side, pixels of the resized image")
    gap: float = param(48.0, ge=0, help="gap between neighbouring grid cells, resized pixels")
    jitter: float = param(7.0, ge=0, help="each patch moves by up to this many resized pixels")
    image_pixels: tuple[float, float] = param(
        (150_000.0, 450_000.0), gt=0, help="[min, max] pixel count the image is resized to"
    )
    color: Literal["drop", "project", "none"] = param(
        "drop", help="against chromatic aberration: drop 2 of 3 channels, or project colours"
    )
    hidden: tuple[int, ...] = param(
        (4096, 4096), ge=1, help="sizes of the fc layers over the concatenated pair (fc7, fc8)"
    )
    lr: float = param(
        1e-3,
        gt=0,
        help="learning rate, replaces train.lr (not the paper's: the authors' code used 1e-5 "
        "on the cross-entropy summed over a batch, with BatchNorm in every layer)",
    )
    optimizer: Literal["sgd", "adam", "adamw"] = param(
        "sgd",
        help="replaces train.optimizer: doersch.lr is a step size of this optimiser (the "
        "authors trained with SGD; momentum is train.momentum)",
    )
    weight_decay: float = param(
        5e-4, ge=0, help="replaces train.weight_decay (the value doersch.lr was chosen with)"
    )

    def validate(self) -> None:
        lo, hi = self.image_pixels
        if lo > hi:
            raise ConfigError(
                f"doersch.image_pixels: {list(self.image_pixels)} has min > max; "
                "allowed: [min, max] with min <= max"
            )
        if 2 * self.jitter > self.gap:
            raise ConfigError(
                f"doersch.jitter: {self.jitter} lets neighbouring patches touch across the "
                f"gap of {self.gap}; allowed: <= gap / 2 = {self.gap / 2}"
            )
