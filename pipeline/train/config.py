"""Configuration of the train stage (bottom stream + spatial context module)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.config import device_param, param


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
    device: str = device_param()
    amp: bool = param(False, help="mixed precision (float16 on the GPU, bfloat16 on the CPU)")
    workers: int = param(0, ge=0, help="DataLoader worker processes")
    resume: bool = param(True, help="continue from the last checkpoint when present")
    preload_max_mb: int = param(
        2048, ge=0, help="read cached targets/trunk arrays up to this size into memory"
    )
