"""The stage registry shared by ``stages/*.py`` and the ``scn`` CLI.

Each stage is a function ``stage(params: Params) -> dict`` in its own module. It reads
its inputs and writes its outputs under ``params.paths``; the dict it returns is
written to ``metrics/<stage>.json`` (atomically) by :func:`run_stage`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import resource
import sys
import threading
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
    "train": "pipeline.train.stage:stage",
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


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``getrusage``; Linux reports
    ``ru_maxrss`` in KiB, macOS in bytes)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(own / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


class ChildMemory:
    """Samples the memory of this process's live descendants while a stage runs.

    ``peak_mb``: the largest sum over the descendants of their unique set size (USS:
    the pages only that process holds, so a forked worker does not count the pages it
    still shares with the stage), sampled every ``interval`` seconds; 0 when the stage
    starts no processes (DataLoader workers, the EdgeBoxes pool, YOLO's trainer). A
    child living shorter than the interval may be missed; children that were already
    running when the sampling started are not counted.
    """

    def __init__(self, interval: float = 0.5):
        self.interval, self.peak_mb = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="child-memory", daemon=True)
        self._before: set[tuple[int, float]] = set()

    @staticmethod
    def _children() -> list:
        import psutil

        return psutil.Process().children(recursive=True)

    @staticmethod
    def _key(proc) -> tuple[int, float]:
        return proc.pid, proc.create_time()  # a pid may be reused; with its start time not

    def _sample(self) -> float:
        import psutil

        total = 0
        for child in self._children():
            try:
                if self._key(child) not in self._before:
                    total += child.memory_full_info().uss
            except (psutil.Error, OSError):  # gone, or not ours to read
                continue
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, self._sample())

    def __enter__(self) -> ChildMemory:
        import psutil

        for child in self._children():
            with contextlib.suppress(psutil.Error, OSError):
                self._before.add(self._key(child))
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_stage(name: str, params_path: str | Path = "params.yaml") -> dict:
    """Validate params, run stage ``name``, write ``metrics/<name>.json``; return metrics."""
    fn = stage_function(name)
    params = load_params(params_path)
    log.info("stage %s, code %s, params %s", name, code_version(), params_path)
    log.debug("resolved params: %s", to_dict(params))
    start = time.perf_counter()
    with ChildMemory() as children:
        metrics = fn(params)
    if metrics is not None:
        memory = {"peak_rss_mb": peak_rss_mb(), "children_peak_uss_mb": round(children.peak_mb, 1)}
        metrics = {"stage": name, "seconds": round(time.perf_counter() - start, 3), **memory,
                   **metrics}  # fmt: skip
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
