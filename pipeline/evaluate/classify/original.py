"""Stage ``classify_original``: the original network's side of the classification
protocol, once per dataset, backbone and evaluation params.

The original pretrained network does not depend on the proposal mechanism, the SCN
method or its training, so its evaluation is a stage of its own that an experiment on
the SCN side does not rerun. It extracts (or reuses) the original network's Obj and Img
features (``<paths.original>/classify/original_<setting>_<split>.h5``, the caches of
:mod:`pipeline.evaluate.classify.features`), fits its SVMs
(:func:`~pipeline.evaluate.classify.network.fit_network`) and runs its low-shot protocol,
and stores what stage ``classify`` needs to compare the trained network with it in
``<paths.original>/classify/results.h5``:

- per setting (group ``obj``, ``img``): ``scores`` (M, C) float64, the SVMs' test
  decision values (nan for a class without an SVM; what the paired bootstrap resamples),
  ``test_labels`` (M, C) int8; attrs ``result`` (JSON: the SVM result as in
  ``metrics/classify.json``), ``n_train``, ``n_test``, ``lowshot`` (JSON: the low-shot
  record of the setting) and ``lowshot_signature`` (JSON: k, samples, seed and the
  SHA-256 of the training labels: what the draws depend on); subgroup ``lowshot_scores``
  with one dataset ``k<k>`` (samples, M, C) float64 per low-shot k: the test decision
  values of each draw's SVMs, which the paired bootstrap of the low-shot difference
  resamples (:func:`pipeline.evaluate.bootstrap.draws_differences`);
- root attrs: ``created_by``, ``code_version``, ``params`` (JSON: the stage's declared
  params, :func:`pipeline.runner.stage_provenance`), ``classes`` (JSON).

:func:`read_original_classify` reads it back for stage ``classify`` and refuses, with a
:class:`~pipeline.errors.DataError` naming the file, results made with other params,
classes, test items or low-shot draws than the SCN side's.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from pipeline.data.voc import DatasetRef, open_split
from pipeline.devices import resolve_device
from pipeline.errors import DataError
from pipeline.evaluate.classify.features import original_extractor
from pipeline.evaluate.classify.network import (
    ROLES,
    SETTINGS,
    fit_network,
    lowshot_network,
    lowshot_signature,
    network_features,
)
from pipeline.evaluate.compare import ORIGINAL, check_created_by, check_same, require_file
from pipeline.io import atomic_path
from pipeline.provenance import code_version
from pipeline.seed import seed_everything

if TYPE_CHECKING:
    from pipeline.artifacts import PathsConfig
    from pipeline.backbones.config import NetworkConfig
    from pipeline.evaluate.config import ClassifyConfig

log = logging.getLogger(__name__)

NETWORK = ORIGINAL
STAGE = "classify_original"


def run_classify_original(
    dataset_ref: DatasetRef,
    backbone: str,
    net: NetworkConfig,
    cfg: ClassifyConfig,
    splits: tuple[str, str],
    paths: PathsConfig,
    provenance: dict[str, Any],
) -> dict:
    """DVC stage ``classify_original``: features, SVMs and low-shot of the original
    network on the (train, test) ``splits``; writes ``paths.original_classify_file``."""
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device, "classify.device")
    datasets = {
        role: open_split(dataset_ref, split, stage=STAGE)
        for role, split in zip(ROLES, splits, strict=True)
    }
    classes = datasets["train"].classes

    from pipeline.backbones import build_backbone

    extractor = original_extractor(
        build_backbone(backbone, net.weights, input_size=net.input_size), device
    )
    feats = network_features(
        paths.original_classify_dir, datasets, extractor, dataset_ref.name, cfg.batch_size,
        json.dumps(provenance),
    )  # fmt: skip
    fitted = fit_network(feats, classes, cfg, NETWORK, device)
    lowshot_scores: dict = {}  # setting -> k -> (samples, M, C)
    lowshot = lowshot_network(cfg, classes, feats, NETWORK, device, lowshot_scores)

    metrics: dict = {"device": str(device), "classes": list(classes)}
    with atomic_path(paths.original_classify_file) as tmp, h5py.File(tmp, "w") as fh:
        fh.attrs["created_by"] = STAGE
        fh.attrs["code_version"] = code_version()
        fh.attrs["params"] = json.dumps(provenance, sort_keys=True)
        fh.attrs["classes"] = json.dumps(list(classes))
        for setting in SETTINGS:
            f, res = feats[setting], fitted[setting]
            g = fh.create_group(setting)
            g.create_dataset("scores", data=np.asarray(res.scores, dtype=np.float64))
            g.create_dataset("test_labels", data=np.asarray(f["test"]["labels"], dtype=np.int8))
            g.attrs["result"] = json.dumps(res.to_dict())
            g.attrs["n_train"] = len(f["train"]["features"])
            g.attrs["n_test"] = len(f["test"]["features"])
            g.attrs["lowshot"] = json.dumps(lowshot["settings"].get(setting))
            g.attrs["lowshot_signature"] = json.dumps(lowshot_signature(cfg, f["train"]["labels"]))
            low = g.create_group("lowshot_scores")
            for k, scores in lowshot_scores.get(setting, {}).items():
                low.create_dataset(f"k{k}", data=scores, compression="gzip", shuffle=True)
            metrics[setting] = {
                NETWORK: res.to_dict(),
                "n_train": len(f["train"]["features"]),
                "n_test": len(f["test"]["features"]),
            }
    metrics["lowshot"] = lowshot
    metrics["skipped"] = {role: ds.policy.metrics() for role, ds in datasets.items()}
    log.info("wrote %s", paths.original_classify_file)
    return metrics


@dataclass
class OriginalClassify:
    """The original network's classification results, as stage ``classify`` reads them."""

    path: Path
    results: dict[str, dict]  # setting -> SVM result dict
    scores: dict[str, np.ndarray]  # setting -> (M, C) test decision values
    n_train: dict[str, int]
    n_test: dict[str, int]
    lowshot: dict  # lowshot_network's layout
    # setting -> k -> (samples, M, C) test decision values of each low-shot draw's SVMs
    lowshot_scores: dict[str, dict[int, np.ndarray]]


def _lowshot_scores(group: h5py.Group) -> dict[int, np.ndarray] | None:
    """k -> (samples, M, C) of a setting's ``lowshot_scores``; None when absent."""
    low = group.get("lowshot_scores")
    return None if low is None else {int(name[1:]): low[name][()] for name in low}


def read_original_classify(
    path: Path,
    provenance: dict[str, Any],
    classes: list[str],
    labels: dict[str, dict[str, np.ndarray]],
    cfg: ClassifyConfig,
) -> OriginalClassify:
    """Read ``path`` (``results.h5`` of stage ``classify_original``) and check it is the
    original network's evaluation of the items and params of the SCN side now.

    ``provenance``: the params ``classify_original`` must have been run with (its
    :func:`~pipeline.runner.stage_provenance` under the current params); ``labels``:
    ``labels[setting][role]``, the SCN side's label matrices of the same items (the test
    labels must be equal; the training labels fix the low-shot draws).
    """
    rerun = "run `dvc repro classify_original` (or `scn classify_original`) first"
    path = require_file(path, "the original network's results", rerun)
    try:
        with h5py.File(path, "r") as fh:
            attrs = {k: fh.attrs[k] for k in ("created_by", "params", "classes")}
            groups = {
                s: (
                    fh[s]["scores"][()],
                    fh[s]["test_labels"][()],
                    {k: fh[s].attrs[k] for k in fh[s].attrs},
                    _lowshot_scores(fh[s]),
                )
                for s in SETTINGS
            }
    except (OSError, KeyError) as err:
        raise DataError(path, f"unreadable or incomplete ({err}); {rerun}", "corrupt") from err
    check_created_by(path, attrs["created_by"], STAGE)
    check_same(path, json.loads(attrs["params"]), provenance, rerun)
    if json.loads(attrs["classes"]) != list(classes):
        raise DataError(path, f"classes {attrs['classes']} differ from {list(classes)}; {rerun}",
                        kind="provenance_mismatch")  # fmt: skip
    out = OriginalClassify(path, {}, {}, {}, {}, {"k": list(cfg.lowshot_k),
                           "n_samples": cfg.lowshot_samples, "settings": {}}, {})  # fmt: skip
    for setting, (scores, test_labels, gattrs, low_scores) in groups.items():
        if not np.array_equal(test_labels, labels[setting]["test"]):
            raise DataError(
                path, f"{setting}: its test items (labels) are not those of the SCN side; {rerun}",
                kind="provenance_mismatch",
            )  # fmt: skip
        signature = lowshot_signature(cfg, labels[setting]["train"])
        if json.loads(gattrs["lowshot_signature"]) != signature:
            raise DataError(
                path,
                f"{setting}: its low-shot draws ({gattrs['lowshot_signature']}) are not the "
                f"SCN side's ({json.dumps(signature)}); {rerun}",
                kind="provenance_mismatch",
            )
        out.results[setting] = json.loads(gattrs["result"])
        out.scores[setting] = scores
        out.n_train[setting] = int(gattrs["n_train"])
        out.n_test[setting] = int(gattrs["n_test"])
        lowshot = json.loads(gattrs["lowshot"])
        if lowshot is not None:
            if low_scores is None or set(low_scores) != set(lowshot["k"]):
                raise DataError(
                    path, f"{setting}: lacks the low-shot test scores of k {lowshot['k']} "
                    f"(has {sorted(low_scores or [])}); {rerun}", kind="provenance_mismatch",
                )  # fmt: skip
            out.lowshot["settings"][setting] = lowshot
            out.lowshot_scores[setting] = low_scores
    return out
