"""How a stage runs: ``stages/<name>.py`` loads the params once and calls its library
function with typed sections; this module does what every stage shares around that call.

Each ``stages/<name>.py`` defines ``run(params: Params) -> dict`` (the plain import of
the library function it calls is the stage-to-function link) and ends with
``stage_main("<name>", run)``. :func:`execute` validates the params, times the call,
measures memory, and writes the returned dict to ``metrics/details/<stage>.json`` and its
headline figures (:mod:`pipeline.headline`) to ``metrics/<stage>.json``, the DVC metric
(atomically).
The ``scn <stage>`` CLI commands and the tests run the same scripts through
:func:`run_stage`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import resource
import runpy
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, to_dict
from pipeline.errors import DataError, TooManySkipped
from pipeline.headline import headline
from pipeline.io import write_json
from pipeline.params import Params, load_params
from pipeline.provenance import code_version

log = logging.getLogger(__name__)

#: The stages, in the order of the DAG (dvc.yaml's ``stages``; a test keeps them equal).
STAGE_NAMES = (
    "scenes",
    "yolo",
    "proposals",
    "detect_proposals",
    "pairs",
    "targets",
    "diagnose_objects",
    "diagnose",
    "train",
    "classify_original",
    "classify",
    "detect_original",
    "detect",
    "synthetic",
)
#: ``stages/`` of the checkout this package lives in (what dvc.yaml runs).
STAGES_DIR = Path(__file__).resolve().parent.parent / "stages"

#: The stage graph DVC runs; each stage's ``params:`` list there is the one declaration of
#: the params it depends on.
DVC_YAML = STAGES_DIR.parent / "dvc.yaml"

StageRun = Callable[[Params], "dict[str, Any] | None"]


def declared_params(name: str, dvc_yaml: Path = DVC_YAML) -> tuple[str, ...]:
    """The params keys stage ``name`` depends on: its ``params:`` list in dvc.yaml (what DVC
    reruns it by), in order."""
    import yaml

    stages = yaml.safe_load(Path(dvc_yaml).read_text())["stages"]
    if name not in stages:
        raise ConfigError(f"stage: {name!r} is not in {dvc_yaml}; allowed: {', '.join(stages)}")
    keys: list[str] = []
    for entry in stages[name].get("params", []):
        if isinstance(entry, str):
            keys.append(entry)
        else:  # {params_file: [keys]}
            for listed in entry.values():
                keys.extend(listed)
    return tuple(keys)


def stage_provenance(params: Params, name: str, dvc_yaml: Path = DVC_YAML) -> dict[str, Any]:
    """``{key: value}`` of every param stage ``name`` depends on (:func:`declared_params`),
    as plain YAML/JSON values: what its artifacts record as their ``params``."""
    data = to_dict(params)
    out: dict[str, Any] = {}
    for key in declared_params(name, dvc_yaml):
        node: Any = data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"{dvc_yaml}: stage {name}: params key {key!r} is not a param")
            node = node[part]
        out[key] = node
    return out


def stage_script(name: str) -> StageRun:
    """The ``run`` function of ``stages/<name>.py``, the script DVC runs for the stage."""
    path = STAGES_DIR / f"{name}.py"
    if name not in STAGE_NAMES:
        raise ConfigError(f"stage: {name!r} is unknown; allowed: {', '.join(STAGE_NAMES)}")
    if not path.is_file():
        raise ConfigError(f"stage {name}: {path} not found; run from a checkout of the project")
    return runpy.run_path(str(path), run_name=f"stages.{name}")["run"]


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


def execute(name: str, run: StageRun, params: str | Path | Params = "params.yaml") -> dict:
    """Validate params, call ``run``, write its metrics; return them (the details).

    The details (everything ``run`` returned, with ``stage``, ``seconds`` and memory) go to
    ``paths.details_file(name)``, their headline figures to ``paths.metrics_file(name)``.

    ``params`` is a params.yaml path, or an already validated :class:`Params`.
    """
    params_path = "<Params>" if isinstance(params, Params) else params
    if not isinstance(params, Params):
        params = load_params(params)
    log.info("stage %s, code %s, params %s", name, code_version(), params_path)
    log.debug("resolved params: %s", to_dict(params))
    start = time.perf_counter()
    with ChildMemory() as children:
        metrics = run(params)
    if metrics is not None:
        memory = {"peak_rss_mb": peak_rss_mb(), "children_peak_uss_mb": round(children.peak_mb, 1)}
        metrics = {"stage": name, "seconds": round(time.perf_counter() - start, 3), **memory,
                   **metrics}  # fmt: skip
        write_json(params.paths.details_file(name), metrics)
        write_json(params.paths.metrics_file(name), headline(name, metrics), sort_keys=False)
    log.info("stage %s done in %.1fs", name, time.perf_counter() - start)
    return metrics or {}


def run_stage(name: str, params: str | Path | Params = "params.yaml") -> dict:
    """Run ``stages/<name>.py`` as DVC does (for the CLI and tests); return its metrics."""
    return execute(name, stage_script(name), params)


def stage_main(name: str, run: StageRun, argv: list[str] | None = None) -> None:
    """Entry point of a ``stages/<name>.py`` script."""
    parser = argparse.ArgumentParser(description=f"DVC stage {name!r}")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        execute(name, run, args.params)
    except (ConfigError, DataError, TooManySkipped) as err:
        log.error("%s", err)
        raise SystemExit(2) from None
