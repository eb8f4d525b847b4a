"""Configuration of the train stage (bottom stream + spatial context module)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.config import device_param, param


@dataclass(frozen=True)
class TrainConfig:
    """Paper defaults (section 3): SGD, batch 64, lr 1e-3 -> 1e-4 after 100 of 200 epochs,
    weight decay 5e-4. The embedded default trains fewer epochs (see params.yaml).

    ``loss``: ``sum`` is the paper's objective, the squared error summed over the
    feature dimension and over the pairs of a batch; its gradient grows with the batch
    size, so a stable learning rate is smaller than with ``mean`` (see params.yaml).
    """

    seed: int = param(0, ge=0)
    epochs: int = param(200, ge=1)
    batch_size: int = param(64, ge=1, help="global batch (split over DDP processes)")
    lr: float = param(1e-3, gt=0)
    lr_step_epoch: int = param(100, ge=1, help="multiply lr by lr_gamma after this epoch")
    lr_gamma: float = param(0.1, gt=0, le=1)
    momentum: float = param(0.9, ge=0, lt=1)
    weight_decay: float = param(5e-4, ge=0)
    hidden: int = param(1024, ge=1, help="size of h2 in the context module")
    use_offset: bool = param(True, help="false: ablation without the offset input (Fig. 3)")
    loss: Literal["sum", "mean"] = param("sum", help="squared error summed or averaged")
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
    device: str = device_param()
    amp: bool = param(False, help="mixed precision (float16 on the GPU, bfloat16 on the CPU)")
    workers: int = param(0, ge=0, help="DataLoader worker processes")
    resume: bool = param(True, help="continue from the last checkpoint when present")
    preload_max_mb: int = param(
        2048, ge=0, help="read cached targets/trunk arrays up to this size into memory"
    )
