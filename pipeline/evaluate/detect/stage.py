"""Stage ``detect``: Fast R-CNN with the trained SCN bottom stream, against the original
backbone's detector of stage ``detect_original``.

The SCN's detector is trained and tested exactly as the original's
(:func:`pipeline.evaluate.detect.network.evaluate_network`: same schedule, seed and RoIs);
the only difference is the backbone: ``load_trained(<paths.train>/model.pt).backbone``
vs ``build_backbone(backbone, network.weights)``. The original's results are read from
``<paths.original>/detect`` (:func:`~pipeline.evaluate.detect.original.
read_original_detect`, checked against the params ``detect_original`` would use now).
VOC detection AP of both and the SCN - original differences go to ``metrics/detect.json``,
the mAP difference with a paired bootstrap 95% interval over the test images
(``detect.bootstrap`` resamples seeded by ``detect.seed``;
:func:`~pipeline.evaluate.detect.detection_ap.detection_bootstrap`) and its verdict in
``map_diff_ci`` (the resampled differences in ``<paths.detect>/bootstrap.npz``, for
intervals pooled over training seeds). With ``detect.seeds`` = N > 1, detector k of the
SCN is paired with detector k of the original (both seeded ``detect.seed + k``); every
pair is resampled on the same test resamples, and resample b averages a resample of the
N pairs (:func:`~pipeline.evaluate.bootstrap.pooled_differences`), so the interval holds
what retraining the detector changes as well as the test images; the figures are the
means over the N pairs (``map_diff_per_seed``: each pair's difference).

Outputs: ``<paths.detect>/detections.h5`` (both networks' groups,
:func:`~pipeline.evaluate.detect.network.write_detections`), ``<paths.detect>/history.csv``
(per-iteration losses of both runs), and ``<paths.plots>/detect_examples.png``
(detections of both networks on a few test images).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.data.voc import DatasetRef
from pipeline.errors import DataError
from pipeline.evaluate.bootstrap import DISTRIBUTIONS_FILE, pooled_differences, write_distributions
from pipeline.evaluate.compare import ORIGINAL, TRAINED, paired_difference
from pipeline.evaluate.config import DetectConfig
from pipeline.evaluate.detect.detection_ap import detection_bootstrap
from pipeline.evaluate.detect.network import (
    DETECTIONS,
    HISTORY,
    PLOT_NAME,
    detect_inputs,
    differences,
    evaluate_seeds,
    nan_to_none,
    plot_examples,
    run_name,
    setup,
    test_ground_truth,
    write_detections,
    write_history,
)
from pipeline.evaluate.detect.original import read_original_detect

if TYPE_CHECKING:
    from pipeline.artifacts import PathsConfig

log = logging.getLogger(__name__)

# the stream of the detector-seed resamples, apart from the test resamples' (one seed)
DETECTOR_STREAM = 2


def run_detect(
    dataset_ref: DatasetRef,
    backbone: str,
    cfg: DetectConfig,
    splits: tuple[str, str],
    paths: PathsConfig,
    provenance: dict[str, Any],
    original_provenance: dict[str, Any],
    model: object | None = None,
) -> dict:
    """DVC stage ``detect``: train Fast R-CNN on ``splits[0]`` and test it on ``splits[1]``
    with the trained bottom stream, over the ``detect_proposals`` RoIs; compare with the
    original backbone's results (made with ``original_provenance``); return the metrics.

    ``model`` (a Backbone) replaces the bottom stream of ``paths.model_file``, for tests.
    """
    device = setup(cfg)
    inputs = detect_inputs(dataset_ref, cfg, splits, paths, "detect")
    image_ids = [im.id for im in inputs.test_images]
    original = read_original_detect(
        paths.original_detect_dir, original_provenance, image_ids, cfg.seeds
    )
    if model is None:
        model = load_trained_backbone(paths.model_file, backbone)
    runs = evaluate_seeds(TRAINED, model, inputs, cfg, device)
    metrics = {
        **inputs.metrics(device),
        ORIGINAL: original.result,
        TRAINED: runs.result,
        **differences(original.result, runs.result, inputs.classes),
        "map_diff_per_seed": [
            s["map"] - o["map"] for o, s in zip(original.results, runs.results, strict=True)
        ],
    }
    records: dict[str, dict] = {}
    if cfg.bootstrap:  # paired over the test images (and detector seeds), as classify's
        value, diffs = paired_seed_bootstrap(
            original.detections, runs.detections, test_ground_truth(inputs),
            len(inputs.classes), cfg.bootstrap, cfg.seed,
        )  # fmt: skip
        ci, records["det"] = paired_difference(
            value, diffs, cfg.bootstrap, cfg.seed, len(image_ids), "detection mAP"
        )
        metrics["map_diff_ci"] = ci.to_dict()
    # for intervals pooled over training seeds (experiments/results.py); none: removed
    write_distributions(Path(paths.detect) / DISTRIBUTIONS_FILE, records)
    detections = {ORIGINAL: original.detections[0], TRAINED: runs.detections[0]}
    out_dir = Path(paths.detect)
    params_json = json.dumps(provenance, sort_keys=True)
    write_detections(
        out_dir / DETECTIONS, image_ids,
        {**original_named(original.detections), **runs.named_detections(TRAINED)},
        inputs.classes, params_json,
    )  # fmt: skip
    write_history(out_dir / HISTORY, {**original.history, **runs.named_histories(TRAINED)})
    plot_examples(  # the first detector of each network
        paths.plot_file(PLOT_NAME),
        inputs.test_ds,
        inputs.test_images,
        detections,
        inputs.classes,
        cfg.n_examples,
    )
    return nan_to_none(metrics)


def original_named(detections: list) -> dict:
    """The original's detections per detector under their :func:`run_name`."""
    return {run_name(ORIGINAL, k): d for k, d in enumerate(detections)}


def paired_seed_bootstrap(
    detections_a: list,
    detections_b: list,
    ground_truth: list,
    n_classes: int,
    n_boot: int,
    seed: int,
) -> tuple[float, np.ndarray]:
    """The detection mAP difference b - a over N detector pairs (``detections_a[k]`` and
    ``detections_b[k]``: detector k of each network) and its (n_boot,) bootstrap values.

    Every pair is resampled on the same test-image resamples
    (:func:`~pipeline.evaluate.detect.detection_ap.detection_bootstrap` with ``seed``); resample b
    averages a resample of the N pairs (:func:`~pipeline.evaluate.bootstrap.
    pooled_differences`, seeded by ``[seed, DETECTOR_STREAM]``): a two-way bootstrap over
    test images x detector seeds. The value is the mean of the pairs' differences. One pair:
    :func:`detection_bootstrap` itself.
    """
    if len(detections_a) != len(detections_b) or not detections_a:
        raise ValueError(f"{len(detections_a)} and {len(detections_b)} detectors to pair")
    per = [detection_bootstrap(a, b, ground_truth, n_classes, n_boot, seed)
           for a, b in zip(detections_a, detections_b, strict=True)]  # fmt: skip
    values = np.array([v for v, _ in per])  # (N,)
    diffs = np.stack([d for _, d in per])  # (N, B) on the same test resamples
    return float(values.mean()), pooled_differences(diffs, [seed, DETECTOR_STREAM])


def load_trained_backbone(model_path: Path, backbone: str):
    """The trained bottom stream of ``model_path`` as a backbone."""
    from pipeline.train.model import load_trained

    trained = load_trained(model_path).backbone
    if trained.name != backbone:
        raise DataError(
            model_path,
            f"trained on backbone {trained.name!r} but backbone is {backbone!r}; rerun train",
            kind="stale_model",
        )
    return trained
