"""The ``train`` stage: fit a method's network, write model.pt, plots and metrics.

The method (``method`` in params, :data:`TRAIN_METHODS`: ``scn``, the bottom stream and the
context module of paper section 3; ``doersch``, Doersch et al.'s context prediction over
the same bottom stream) supplies the model, the batches, the loss and the held-out
metrics; the loop
(:mod:`pipeline.train.loop`) trains it, writing ``<paths.train>/checkpoint.pt`` each
epoch so that ``train.resume`` continues an interrupted run to the same weights. At the
end rank 0 writes ``<paths.train>/model.pt`` (the same content, the same bytes, whether
the run resumed or not), ``<paths.plots>/train_loss.{csv,png}`` and returns the metrics.

``model.pt`` holds the weights of the last epoch, or with ``train.select: best`` of the
epoch with the best held-out score (the SCN: ``test_explained``); its history has every
epoch run. The metrics describe that epoch, and add ``best_epoch`` and
``best_<score>`` (whatever ``train.select``), ``selected_epoch``, ``epochs`` (asked),
``epochs_run`` and ``stopped_early`` (``train.early_stop_patience``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import ConfigError, to_dict
from pipeline.seed import seed_everything
from pipeline.train.config import DoerschConfig, TrainConfig
from pipeline.train.distributed import init_distributed_from_env, teardown
from pipeline.train.history import without_wall_clock, write_history
from pipeline.train.loop import fit, history_fields
from pipeline.train.methods import doersch, scn
from pipeline.train.methods.base import Method

if TYPE_CHECKING:
    from pipeline.artifacts import PathsConfig
    from pipeline.backbones.config import NetworkConfig
    from pipeline.data.voc import DatasetRef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodInputs:
    """What a method builder may read: the dataset, the network, the sections, the paths."""

    dataset_ref: DatasetRef
    backbone: str
    net: NetworkConfig
    cfg: TrainConfig
    doersch: DoerschConfig
    splits: tuple[str, str]
    paths: PathsConfig


def _scn(a: MethodInputs) -> Method:
    return scn.build_method(a.dataset_ref, a.backbone, a.net, a.cfg, a.splits, a.paths)


def _doersch(a: MethodInputs) -> Method:
    return doersch.build_method(a.dataset_ref, a.backbone, a.net, a.cfg, a.doersch, a.splits,
                                a.paths)  # fmt: skip


#: ``method`` in params -> the builder of its :class:`~pipeline.train.methods.base.Method`
TRAIN_METHODS: dict[str, Callable[[MethodInputs], Method]] = {"scn": _scn, "doersch": _doersch}


def run_train(
    dataset_ref: DatasetRef,
    backbone: str,
    proposal: str,
    net: NetworkConfig,
    cfg: TrainConfig,
    splits: tuple[str, str],
    paths: PathsConfig,
    method: str = "scn",
    doersch_cfg: DoerschConfig | None = None,
) -> dict | None:
    """Train ``method`` (the SCN on the pairs and target caches of ``splits[0]``, or
    Doersch's task on its images; ``splits[1]`` held out); write model.pt, plots; return
    the metrics (``None`` on other DDP ranks). ``proposal`` is recorded in model.pt's
    config."""
    if method not in TRAIN_METHODS:
        raise ConfigError(
            f"method: {method!r} is not a valid choice; allowed: {', '.join(TRAIN_METHODS)}"
        )
    doersch_cfg = doersch_cfg or DoerschConfig()
    if method == "doersch":  # its own regime: doersch.lr is a step size of doersch.optimizer
        cfg = replace(cfg, optimizer=doersch_cfg.optimizer, weight_decay=doersch_cfg.weight_decay,
                      lr=doersch_cfg.lr)  # fmt: skip
    info = init_distributed_from_env(cfg.device)
    seed_everything(cfg.seed)
    inputs = MethodInputs(dataset_ref, backbone, net, cfg, doersch_cfg, splits, paths)
    trainer = TRAIN_METHODS[method](inputs)
    out_dir = Path(paths.train)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {**trainer.resume_meta(), "method": method}
    frozen = trainer.frozen_baseline()  # leaves the trainer's model as it was
    result = fit(trainer, cfg, checkpoint=paths.checkpoint_file, meta=meta)
    metrics: dict[str, Any] = {}
    if info.is_main:
        config = {
            "method": method,
            "train": to_dict(cfg),
            "network": to_dict(net),
            "backbone": backbone,
            "dataset": dataset_ref.name,
            "proposal": proposal,
        }
        if method == "doersch":
            config["doersch"] = to_dict(doersch_cfg)
        trainer.save_trained(paths.model_file, config, without_wall_clock(result.history))
        baseline = trainer.baseline()
        write_history(  # a DVC plot, not a metric: no wall-clock column (in the metrics)
            without_wall_clock(result.history),
            [f for f in history_fields(trainer) if f != "seconds"],
            paths.plot_file("train_loss.csv"),
            paths.plot_file("train_loss.png"),
            baseline[1] if baseline else None,
            ylabel=trainer.loss_label,
            title=f"{trainer.name} training",
            baseline_label=baseline[0] if baseline else "baseline",
            marker=(result.selected_epoch, "selected (best)") if cfg.select == "best" else None,
        )
        best = result.best_epoch
        metrics = {
            **trainer.metrics(result),
            "epochs": cfg.epochs,
            "epochs_run": result.history[-1]["epoch"],
            "stopped_early": result.stopped_early,
            "selected_epoch": result.selected_epoch,
            "best_epoch": best,
            f"best_{trainer.select_key}": result.history[best - 1][trainer.select_key]
            if best is not None
            else None,
            # the selected weights are the original network's: no epoch trained the bottom
            # stream (a warm-up as long as the run)
            "selected_is_original": result.selected_epoch <= cfg.context_warmup_epochs,
            "resumed_from_epoch": result.resumed_epoch,
            "pairs_per_s": round(result.pairs_per_s, 1),
            # per epoch, None for those a resumed run read from its checkpoint
            "epoch_seconds": [r.get("seconds") for r in result.history],
            "device": result.device,
            "world_size": result.world_size,
        }
        if frozen is not None:
            metrics.update(frozen)
            # what fine-tuning the bottom stream adds to the frozen features' explained
            # share: on the non-overlapping pairs, the evidence that SCN learned context
            for sub in ("", "_nonoverlap"):
                gain = metrics[f"test_explained{sub}"] - frozen[f"frozen_test_explained{sub}"]
                metrics[f"finetune_gain{sub}"] = gain
            log.info(
                "held-out explained share, non-overlapping pairs: SCN %.3f%%, frozen features "
                "%.3f%%, fine-tuning gain %+.3f points%s",
                100 * metrics["test_explained_nonoverlap"],
                100 * frozen["frozen_test_explained_nonoverlap"],
                100 * metrics["finetune_gain_nonoverlap"],
                " (the selected network is the original)" if metrics["selected_is_original"]
                else "",
            )  # fmt: skip
    teardown(info)
    return metrics if info.is_main else None
