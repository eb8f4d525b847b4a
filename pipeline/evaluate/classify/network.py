"""One network's side of the classification protocol (stage ``classify_original`` for the
original network, stage ``classify`` for the trained bottom stream).

- :func:`network_features`: the Obj and Img features of one extractor on the (train,
  test) datasets, from the provenance-checked caches of :mod:`pipeline.evaluate.classify.features`;
- :func:`fit_network`: the full linear-SVM protocol (:func:`pipeline.evaluate.classify.svm.
  train_and_test`) per setting; the results keep the per-example test scores that the
  paired bootstrap resamples;
- :func:`lowshot_network`: the low-shot protocol (:mod:`pipeline.evaluate.classify.lowshot`) per
  setting. Its draws depend only on the training labels, ``classify.lowshot_k``,
  ``classify.lowshot_samples`` and ``classify.seed`` (:func:`lowshot_signature`), so two
  networks evaluated in two stages are paired exactly as when evaluated together.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline.evaluate.classify.features import Extractor, cached_features
from pipeline.evaluate.classify.lowshot import evaluate_lowshot
from pipeline.evaluate.classify.svm import SVMResult, train_and_test

if TYPE_CHECKING:
    from pipeline.data.voc import VOCDataset
    from pipeline.evaluate.config import ClassifyConfig

log = logging.getLogger(__name__)

SETTINGS = ("obj", "img")
ROLES = ("train", "test")

#: features[setting][role] -> the cache's arrays (``features``, ``labels``, ...)
Features = dict[str, dict[str, dict[str, np.ndarray]]]


def network_features(
    cache_dir: Path,
    datasets: dict[str, VOCDataset],
    extractor: Extractor,
    dataset: str,
    batch_size: int,
    params_json: str,
) -> Features:
    """Obj and Img features of ``extractor`` on the (train, test) ``datasets``, from
    ``cache_dir`` (computed and written there when missing or stale)."""
    return {
        setting: {
            role: cached_features(
                cache_dir, datasets[role], setting, extractor, dataset, batch_size, params_json
            )
            for role in ROLES
        }
        for setting in SETTINGS
    }


def fit_network(
    feats: Features,
    classes: Sequence[str],
    cfg: ClassifyConfig,
    network: str,
    device: torch.device | None = None,
) -> dict[str, SVMResult]:
    """The full SVM protocol on one network's features, per setting (obj, img)."""
    out: dict[str, SVMResult] = {}
    for setting in SETTINGS:
        tr, te = feats[setting]["train"], feats[setting]["test"]
        res = train_and_test(
            tr["features"],
            tr["labels"],
            te["features"],
            te["labels"],
            classes,
            cfg.costs,
            cfg.cv_folds,
            cfg.seed,
            desc=f"{setting} {network}",
            workers=cfg.workers,
            solver=cfg.solver,
            device=device,
            threads=cfg.threads,
        )
        log.info("%s %s: mAP %.4f (11-point %.4f)", setting, network, res.map, res.map_11point)
        out[setting] = res
    return out


def labels_sha256(labels: np.ndarray) -> str:
    """SHA-256 of a label matrix (shape, dtype-independent int8 values)."""
    a = np.ascontiguousarray(np.asarray(labels), dtype=np.int8)
    h = hashlib.sha256(repr(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def lowshot_signature(cfg: ClassifyConfig, train_labels: np.ndarray) -> dict:
    """What the low-shot draws of one setting depend on: equal signatures, equal draws."""
    return {
        "k": [int(k) for k in cfg.lowshot_k],
        "n_samples": int(cfg.lowshot_samples),
        "seed": int(cfg.seed),
        "train_labels_sha256": labels_sha256(train_labels),
    }


def lowshot_network(
    cfg: ClassifyConfig,
    classes: Sequence[str],
    feats: Features,
    network: str,
    device: torch.device | None = None,
    scores_out: dict | None = None,
) -> dict:
    """The low-shot protocol on Obj and Img for one network: ``settings[setting]`` as
    :func:`pipeline.evaluate.classify.lowshot.evaluate_lowshot` returns it (keys ``k``,
    ``n_samples``, ``skipped_k``, ``negatives_capped`` and ``network``); empty when
    disabled. ``scores_out``, when given, is filled with ``scores_out[setting][k]``: the
    (samples, M, C) test decision values of each draw's SVMs (for the paired bootstrap)."""
    out: dict = {"k": list(cfg.lowshot_k), "n_samples": cfg.lowshot_samples, "settings": {}}
    if not cfg.lowshot_k:
        log.info("low-shot evaluation disabled (classify.lowshot_k is empty)")
        return out
    for setting in SETTINGS:
        f = feats[setting]
        scores: dict = {}
        out["settings"][setting] = evaluate_lowshot(
            {network: (f["train"]["features"], f["train"]["labels"])},
            {network: (f["test"]["features"], f["test"]["labels"])},
            classes, cfg.lowshot_k, cfg.lowshot_samples, cfg.costs, cfg.cv_folds, cfg.seed,
            desc=f"lowshot {setting}", solver=cfg.solver, device=device, threads=cfg.threads,
            workers=cfg.workers, scores_out=scores,
        )  # fmt: skip
        if scores_out is not None:
            scores_out[setting] = scores.get(network, {})
    return out


def merge_lowshot(first: dict, second: dict) -> dict:
    """Two networks' :func:`lowshot_network` results on the same draws as one record, in
    the layout of :func:`~pipeline.evaluate.classify.lowshot.evaluate_lowshot` for both: shared
    keys once, then each network's results. Raises ValueError when the shared keys
    differ (not the same draws)."""
    if (first["k"], first["n_samples"]) != (second["k"], second["n_samples"]) or set(
        first["settings"]
    ) != set(second["settings"]):
        raise ValueError("low-shot results of different k, samples or settings")
    merged: dict = {"k": first["k"], "n_samples": first["n_samples"], "settings": {}}
    shared = ("k", "n_samples", "skipped_k", "negatives_capped")
    for setting, a in first["settings"].items():
        b = second["settings"][setting]
        for key in shared:
            if a[key] != b[key]:
                raise ValueError(f"low-shot {setting}: {key} differs ({a[key]} vs {b[key]})")
        nets = {k: v for k, v in a.items() if k not in shared}
        nets.update({k: v for k, v in b.items() if k not in shared})
        merged["settings"][setting] = {**{k: a[k] for k in shared}, **nets}
    return merged
