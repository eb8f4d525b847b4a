"""Stage ``detect_original``: Fast R-CNN on the original backbone, once per dataset,
backbone, detection proposals and detection params.

The original backbone does not depend on the SCN's proposal mechanism, method or
training, so its detector is trained and tested in a stage of its own that an experiment
on the SCN side does not rerun (:func:`pipeline.evaluate.detect.network.evaluate_network`,
the same function as for the SCN in stage ``detect``, under the same schedule and seed).

Outputs in ``<paths.original>/detect``: ``detections.h5`` (group ``original``, and
``original_seed<k>`` for the further ``detect.seeds`` detectors, format of
:func:`~pipeline.evaluate.detect.network.write_detections`), ``history.csv`` (their losses per
iteration) and ``result.json`` (``created_by``, ``code_version``, ``params``: the stage's
declared params, ``image_ids`` of the test images, ``result``: the AP and loss figures
as in ``metrics/detect.json``'s ``original`` (the mean over the detectors), and
``per_seed``: each detector's, NaN kept for classes without AP; no wall-clock figures,
which go to the stage's metrics only, so the file's bytes are the same run to run).
:func:`read_original_detect` reads them back for stage ``detect`` and refuses, naming the
file, results made with other params or on other test images.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.data.voc import DatasetRef
from pipeline.errors import DataError
from pipeline.evaluate.compare import ORIGINAL, check_created_by, check_same, require_file
from pipeline.evaluate.config import DetectConfig
from pipeline.evaluate.detect.network import (
    DETECTIONS,
    HISTORY,
    Detections,
    detect_inputs,
    evaluate_seeds,
    nan_to_none,
    read_detections,
    read_history,
    run_name,
    setup,
    write_detections,
    write_history,
)
from pipeline.io import atomic_path
from pipeline.provenance import code_version

if TYPE_CHECKING:
    from pipeline.artifacts import PathsConfig
    from pipeline.backbones.config import NetworkConfig

log = logging.getLogger(__name__)

NETWORK = ORIGINAL
STAGE = "detect_original"
RESULT = "result.json"
# wall-clock figures: in the stage's metrics only, so that result.json (a dependency of
# stage `detect`) is byte-identical from run to run
WALL_CLOCK_KEYS = ("train_seconds", "test_seconds")


def without_wall_clock(result: dict) -> dict:
    """``result`` without :data:`WALL_CLOCK_KEYS`."""
    return {k: v for k, v in result.items() if k not in WALL_CLOCK_KEYS}


def run_detect_original(
    dataset_ref: DatasetRef,
    backbone: str,
    net: NetworkConfig,
    cfg: DetectConfig,
    splits: tuple[str, str],
    paths: PathsConfig,
    provenance: dict[str, Any],
    model: object | None = None,
) -> dict:
    """DVC stage ``detect_original``: train Fast R-CNN on ``splits[0]`` and test it on
    ``splits[1]`` with the original backbone; write ``paths.original_detect_dir``.

    ``model`` (a Backbone) replaces ``build_backbone(backbone, network.weights)``, for tests.
    """
    device = setup(cfg)
    inputs = detect_inputs(dataset_ref, cfg, splits, paths, STAGE)
    if model is None:
        from pipeline.backbones import build_backbone

        model = build_backbone(backbone, net.weights, input_size=net.input_size)
    runs = evaluate_seeds(NETWORK, model, inputs, cfg, device)
    result = runs.result
    out_dir = paths.original_detect_dir
    params_json = json.dumps(provenance, sort_keys=True)
    image_ids = [im.id for im in inputs.test_images]
    write_detections(
        out_dir / DETECTIONS, image_ids, runs.named_detections(NETWORK), inputs.classes,
        params_json, STAGE,
    )  # fmt: skip
    write_history(out_dir / HISTORY, runs.named_histories(NETWORK))
    record = {
        "created_by": STAGE,
        "code_version": code_version(),
        "params": provenance,
        "image_ids": image_ids,
        "result": without_wall_clock(result),
        "per_seed": [without_wall_clock(r) for r in runs.results],
    }
    with atomic_path(out_dir / RESULT) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return nan_to_none({**inputs.metrics(device), NETWORK: result})


@dataclass
class OriginalDetect:
    """The original backbone's detection results, as stage ``detect`` reads them."""

    result: dict  # NaN where a class has no AP; the mean over the detectors
    detections: list[Detections]  # per detector (seed detect.seed + k)
    history: dict[str, list[dict]]  # run_name(original, k) -> its rows
    results: list[dict]  # per detector


def read_original_detect(
    out_dir: Path, provenance: dict[str, Any], image_ids: list[str], n_seeds: int = 1
) -> OriginalDetect:
    """Read stage ``detect_original``'s outputs in ``out_dir``, checked to have been made
    with ``provenance`` (that stage's params now) on the test images ``image_ids`` with
    ``n_seeds`` detectors (``detect.seeds``)."""
    rerun = "run `dvc repro detect_original` (or `scn detect_original`) first"
    path = require_file(Path(out_dir) / RESULT, "the original backbone's results", rerun)
    try:
        record = json.loads(path.read_text())
        per_seed = record.get("per_seed") or [record["result"]]
        names = [run_name(NETWORK, k) for k in range(min(len(per_seed), n_seeds))]
        read = [read_detections(Path(out_dir) / DETECTIONS, name) for name in names]
        history = read_history(Path(out_dir) / HISTORY)
        missing = [name for name in names if name not in history]
        if missing:
            raise KeyError(f"no history rows of {', '.join(missing)}")
    except (OSError, KeyError, ValueError) as err:
        raise DataError(path, f"unreadable or incomplete ({err}); {rerun}", "corrupt") from err
    check_created_by(path, record.get("created_by"), STAGE)
    check_same(path, record["params"], provenance, rerun)
    if len(per_seed) != n_seeds:
        raise DataError(
            path,
            f"made with {len(per_seed)} detector seeds, detect.seeds is {n_seeds}; {rerun}",
            kind="provenance_mismatch",
        )
    if record["image_ids"] != list(image_ids) or any(ids != list(image_ids) for ids, _ in read):
        raise DataError(path, f"made on other test images; {rerun}", kind="provenance_mismatch")
    return OriginalDetect(record["result"], [d for _, d in read], history, per_seed)
