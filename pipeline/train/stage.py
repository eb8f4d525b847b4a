"""The ``train`` stage: fit a method's network, write model.pt, plots and metrics.

The method (the SCN for now: the bottom stream and the context module, paper section 3)
supplies the model, the batches, the loss and the held-out metrics; the loop
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import to_dict
from pipeline.seed import seed_everything
from pipeline.train.config import TrainConfig
from pipeline.train.distributed import init_distributed_from_env, teardown
from pipeline.train.history import without_wall_clock, write_history
from pipeline.train.loop import fit, history_fields
from pipeline.train.methods import scn

if TYPE_CHECKING:
    from pipeline.artifacts import PathsConfig
    from pipeline.backbones.config import NetworkConfig
    from pipeline.data.voc import DatasetRef

log = logging.getLogger(__name__)


def stage(
    dataset_ref: DatasetRef,
    backbone: str,
    proposal: str,
    net: NetworkConfig,
    cfg: TrainConfig,
    splits: tuple[str, str],
    paths: PathsConfig,
) -> dict | None:
    """Train the SCN on the pairs and target caches of ``splits[0]`` (``splits[1]`` held
    out); write model.pt, plots; return the metrics (``None`` on other DDP ranks).
    ``proposal`` is recorded in model.pt's config."""
    info = init_distributed_from_env(cfg.device)
    seed_everything(cfg.seed)
    method = scn.build_method(dataset_ref, backbone, net, cfg, splits, paths)
    out_dir = Path(paths.train)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = fit(method, cfg, checkpoint=paths.checkpoint_file, meta=method.resume_meta())
    metrics: dict[str, Any] = {}
    if info.is_main:
        config = {
            "train": to_dict(cfg),
            "network": to_dict(net),
            "backbone": backbone,
            "dataset": dataset_ref.name,
            "proposal": proposal,
        }
        method.save_trained(paths.model_file, config, without_wall_clock(result.history))
        baseline = method.baseline()
        write_history(
            result.history,
            history_fields(method),
            paths.plot_file("train_loss.csv"),
            paths.plot_file("train_loss.png"),
            baseline[1] if baseline else None,
            ylabel=method.loss_label,
            title=f"{method.name} training",
            baseline_label=baseline[0] if baseline else "baseline",
            marker=(result.selected_epoch, "selected (best)") if cfg.select == "best" else None,
        )
        best = result.best_epoch
        metrics = {
            **method.metrics(result),
            "epochs": cfg.epochs,
            "epochs_run": result.history[-1]["epoch"],
            "stopped_early": result.stopped_early,
            "selected_epoch": result.selected_epoch,
            "best_epoch": best,
            f"best_{method.select_key}": result.history[best - 1][method.select_key]
            if best is not None
            else None,
            "resumed_from_epoch": result.resumed_epoch,
            "pairs_per_s": round(result.pairs_per_s, 1),
            "device": result.device,
            "world_size": result.world_size,
        }
    teardown(info)
    return metrics if info.is_main else None
