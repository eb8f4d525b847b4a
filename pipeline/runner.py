"""The stage registry shared by ``stages/*.py`` and the ``scn`` CLI.

Each stage is a function ``stage(params: Params) -> dict`` in its own module. It reads
its inputs and writes its outputs under ``params.paths``; the dict it returns is
written to ``metrics/<stage>.json`` (atomically) by :func:`run_stage`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, load_params, to_dict
from pipeline.errors import DataError, TooManySkipped
from pipeline.io import write_json
from pipeline.provenance import code_version

log = logging.getLogger(__name__)

# stage name -> "module:function"; imported lazily so one stage never pays for another.
STAGES: dict[str, str] = {
    "scenes": "pipeline.data.scenes:stage",
    "proposals": "pipeline.proposals.stage:stage",
    "yolo": "pipeline.proposals.yolo:stage",
    "detect_proposals": "pipeline.proposals.stage:detect_stage",
    "pairs": "pipeline.pairs.manifest:stage",
    "targets": "pipeline.targets.cache:stage",
    "train": "pipeline.train.loop:stage",
    "classify": "pipeline.evaluate.classify:stage",
    "detect": "pipeline.evaluate.detect:stage",
    "synthetic": "pipeline.synthetic.experiment:stage",
}


def stage_function(name: str) -> Callable[[Any], dict]:
    if name not in STAGES:
        raise ConfigError(f"stage: {name!r} is unknown; allowed: {', '.join(STAGES)}")
    module, func = STAGES[name].split(":")
    return getattr(importlib.import_module(module), func)


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr in a format that stays readable beside tqdm bars."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory so far, in MiB (Linux ``getrusage``; ``ru_maxrss`` is in KiB).

    ``peak_rss_mb``: this process (the stage), from its start. ``children_peak_rss_mb``:
    the largest single finished child process (DataLoader workers, the EdgeBoxes pool,
    YOLO's trainer workers, the ``git`` call of ``code_version``), not their sum. A
    forked child's RSS counts the pages it still shares with the stage process, so this
    is an upper bound of a child's own memory: a short ``git`` call forked from a 500 MB
    stage reports about 500 MB. With ``workers: n`` the stage's whole tree stays below
    ``peak_rss_mb + n * children_peak_rss_mb``.
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # macOS reports bytes
    return {
        "peak_rss_mb": round(own / scale, 1),
        "children_peak_rss_mb": round(children / scale, 1),
    }


def run_stage(name: str, params_path: str | Path = "params.yaml") -> dict:
    """Validate params, run stage ``name``, write ``metrics/<name>.json``; return metrics."""
    fn = stage_function(name)
    params = load_params(params_path)
    log.info("stage %s, code %s, params %s", name, code_version(), params_path)
    log.debug("resolved params: %s", to_dict(params))
    start = time.perf_counter()
    metrics = fn(params)
    if metrics is not None:
        seconds = round(time.perf_counter() - start, 3)
        metrics = {"stage": name, "seconds": seconds, **peak_rss_mb(), **metrics}
        write_json(Path(params.paths.metrics) / f"{name}.json", metrics)
    log.info("stage %s done in %.1fs", name, time.perf_counter() - start)
    return metrics or {}


def main(name: str, argv: list[str] | None = None) -> None:
    """Entry point of a ``stages/<name>.py`` script."""
    parser = argparse.ArgumentParser(description=f"DVC stage {name!r}")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        run_stage(name, args.params)
    except (ConfigError, DataError, TooManySkipped) as err:
        log.error("%s", err)
        raise SystemExit(2) from None
