"""Stage ``detect``: Fast R-CNN with the trained SCN bottom stream, against the original
backbone's detector of stage ``detect_original``.

The SCN's detector is trained and tested exactly as the original's
(:func:`pipeline.evaluate.detect_net.evaluate_network`: same schedule, seed and RoIs);
the only difference is the backbone: ``load_trained(<paths.train>/model.pt).backbone``
vs ``build_backbone(backbone, network.weights)``. The original's results are read from
``<paths.original>/detect`` (:func:`~pipeline.evaluate.detect_original.
read_original_detect`, checked against the params ``detect_original`` would use now).
VOC detection AP of both and the SCN - original differences go to ``metrics/detect.json``,
the mAP difference with a paired bootstrap 95% interval over the test images
(``detect.bootstrap`` resamples seeded by ``detect.seed``;
:func:`~pipeline.evaluate.detection_ap.detection_bootstrap`) and its verdict in
``map_diff_ci`` (the resampled differences in ``<paths.detect>/bootstrap.npz``, for
intervals pooled over training seeds).

Outputs: ``<paths.detect>/detections.h5`` (both networks' groups,
:func:`~pipeline.evaluate.detect_net.write_detections`), ``<paths.detect>/history.csv``
(per-iteration losses of both runs), and ``<paths.plots>/detect_examples.png``
(detections of both networks on a few test images).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.data.voc import DatasetRef
from pipeline.errors import DataError
from pipeline.evaluate.bootstrap import (
    DISTRIBUTIONS_FILE,
    percentile_interval,
    write_distributions,
)
from pipeline.evaluate.config import DetectConfig
from pipeline.evaluate.detect_net import (
    DETECTIONS,
    HISTORY,
    PLOT_NAME,
    detect_inputs,
    differences,
    evaluate_network,
    nan_to_none,
    plot_examples,
    setup,
    test_ground_truth,
    write_detections,
    write_history,
)
from pipeline.evaluate.detect_original import read_original_detect
from pipeline.evaluate.detection_ap import detection_bootstrap

if TYPE_CHECKING:
    from pipeline.artifacts import PathsConfig

log = logging.getLogger(__name__)


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
    original = read_original_detect(paths.original_detect_dir, original_provenance, image_ids)
    if model is None:
        model = load_scn_backbone(paths.model_file, backbone)
    result, dets, hist = evaluate_network("scn", model, inputs, cfg, device)
    metrics = {
        **inputs.metrics(device),
        "original": original.result,
        "scn": result,
        **differences(original.result, result, inputs.classes),
    }
    records: dict[str, dict] = {}
    if cfg.bootstrap:  # paired over the test images, as classify's over objects / images
        value, diffs = detection_bootstrap(
            original.detections, dets, test_ground_truth(inputs), len(inputs.classes),
            cfg.bootstrap, cfg.seed,
        )  # fmt: skip
        ci = percentile_interval(value, diffs, cfg.bootstrap)
        metrics["map_diff_ci"] = ci.to_dict()
        records["det"] = {"value": value, "diffs": diffs, "seed": cfg.seed,
                          "n_boot": cfg.bootstrap, "n_test": len(image_ids)}  # fmt: skip
        log.info("mAP difference %.4f, 95%% interval [%.4f, %.4f] over %d resamples: %s",
                 ci.value, ci.ci_low, ci.ci_high, ci.n_boot, ci.verdict)  # fmt: skip
    # for intervals pooled over training seeds (experiments/results.py); none: removed
    write_distributions(Path(paths.detect) / DISTRIBUTIONS_FILE, records)
    detections = {"original": original.detections, "scn": dets}
    out_dir = Path(paths.detect)
    params_json = json.dumps(provenance, sort_keys=True)
    write_detections(out_dir / DETECTIONS, image_ids, detections, inputs.classes, params_json)
    write_history(out_dir / HISTORY, {"original": original.history, "scn": hist})
    plot_examples(
        paths.plot_file(PLOT_NAME),
        inputs.test_ds,
        inputs.test_images,
        detections,
        inputs.classes,
        cfg.n_examples,
    )
    return nan_to_none(metrics)


def load_scn_backbone(model_path: Path, backbone: str):
    """The trained SCN bottom stream of ``model_path`` as a backbone."""
    from pipeline.train.model import load_trained

    scn = load_trained(model_path).backbone
    if scn.name != backbone:
        raise DataError(
            model_path,
            f"trained on backbone {scn.name!r} but backbone is {backbone!r}; rerun train",
            kind="stale_model",
        )
    return scn
