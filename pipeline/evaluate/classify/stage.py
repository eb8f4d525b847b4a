"""Stage ``classify``: linear-SVM classification, original vs SCN features side by side.

Paper sections 4.2 to 4.4 (Tables 1 and 2, Figure 6); protocol in
:mod:`pipeline.evaluate.classify.svm` (VISSL's VOC07 benchmark).

- **Obj**: ground-truth objects of ``data.eval_train_split`` train one SVM per class,
  those of ``data.eval_test_split`` test them (single label, one-vs-rest AP per class).
- **Img**: whole images, multi-label with VOC image labels 1 / -1 / 0.
- Both with h1 of the ORIGINAL network (``build_backbone(...).features``) and of the
  trained SCN bottom stream (``load_trained(<paths.train>/model.pt).features``). The
  original network's side (features, SVMs, its test scores, low-shot) is stage
  ``classify_original`` (:mod:`pipeline.evaluate.classify.original`), which an experiment
  on the SCN side does not rerun; this stage computes the SCN's side with the same
  functions (:mod:`pipeline.evaluate.classify.network`) and reads the original's, refusing
  results made with other params, items or low-shot draws.
- **Context** (Table 1): ordered pairs (top i, bottom j) of distinct non-difficult
  ground-truth objects of one image, at most ``classify.max_context_pairs`` per split
  (seeded). The top patch's class is predicted by a multi-class linear SVM from (i) the
  top patch's own original features, (ii) h3 predicted by the trained context module from
  the bottom patch's SCN h1 and the offset o_ij (computed as in the pairs stage), (iii)
  both, each block L2-normalised, concatenated. Reported: accuracy, and the share of pairs
  whose two objects share a class. Skipped for a model without a context module
  (``method: doersch``, whose bottom stream is evaluated like the SCN's otherwise).

Every SCN - original mAP difference (Obj over test objects, Img over test images) gets a
paired bootstrap 95% interval (``classify.bootstrap`` resamples, seeded by
``classify.seed``; :mod:`pipeline.evaluate.bootstrap`): ``map_diff_ci`` with a
``verdict`` of "gain", "loss" or "no measurable difference" (the interval holds 0).

**Low-shot** (``classify.lowshot_k``, ``classify.lowshot_samples``): VISSL's VOC07
low-shot protocol on Obj and Img, both networks on the same draws
(:mod:`pipeline.evaluate.classify.lowshot`; the draws depend only on the training labels, k,
samples and seed, checked equal); mean and std mAP per k in ``lowshot`` and
``<paths.plots>/classify_lowshot.png``. Per setting and k, the SCN - original difference
of the mean over the draws with a paired bootstrap 95% interval over the test items and
the draws (:func:`pipeline.evaluate.bootstrap.draws_differences`: the original's
per-draw test scores stored by ``classify_original``, ``classify.bootstrap`` resamples),
with the full protocol's verdict: ``lowshot_diff[setting]["k<k>"]`` = ``diff``, ``lo``,
``hi``, ``verdict``, and ``<paths.plots>/classify_lowshot_diff.png``.

Outputs: the SCN's feature caches ``<paths.classify>/scn_*.h5`` (provenance-checked,
reused across runs), ``<paths.classify>/bootstrap.npz`` (each setting's resampled
differences, and each low-shot k's (``lowshot_<setting>_k<k>``), which every training
seed's run shares, for intervals pooled over seeds:
:func:`pipeline.evaluate.bootstrap.pooled_interval`), ``<paths.plots>/classify_ap.png``
(per-class AP, original vs SCN: Figure 6), ``<paths.plots>/classify_lowshot.png`` and the
returned metrics (``metrics/classify.json``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pipeline.data.voc import DatasetRef, open_split
from pipeline.devices import resolve_device
from pipeline.errors import DataError
from pipeline.evaluate.bootstrap import (
    DISTRIBUTIONS_FILE,
    bootstrap_differences,
    draws_differences,
    lowshot_key,
    write_distributions,
)
from pipeline.evaluate.classify.context import context_classification
from pipeline.evaluate.classify.features import Extractor, read_features, trained_extractor
from pipeline.evaluate.classify.lowshot import plot_lowshot, plot_lowshot_diff
from pipeline.evaluate.classify.network import (
    ROLES,
    SETTINGS,
    fit_network,
    lowshot_network,
    merge_lowshot,
    network_features,
)
from pipeline.evaluate.classify.original import read_original_classify
from pipeline.evaluate.compare import NETWORKS, ORIGINAL, TRAINED, difference, paired_difference
from pipeline.io import write_figure
from pipeline.seed import seed_everything

if TYPE_CHECKING:
    from pipeline.artifacts import PathsConfig
    from pipeline.backbones.config import NetworkConfig
    from pipeline.evaluate.config import ClassifyConfig

log = logging.getLogger(__name__)

PLOT_NAME = "classify_ap.png"
LOWSHOT_PLOT = "classify_lowshot.png"
LOWSHOT_DIFF_PLOT = "classify_lowshot_diff.png"  # SCN - original against k, with intervals


# --------------------------------------------------------------------------- extractor


def load_trained_extractor(
    model_path: Path, backbone: str, device: torch.device
) -> tuple[Extractor, object]:
    """Extractor of the trained bottom stream in ``model_path``, and the TrainedNetwork;
    refused when it was trained on another backbone than ``backbone``."""
    from pipeline.train.model import load_trained

    trained = load_trained(model_path, device=device)
    trained_backbone = trained.config.get("backbone")
    if trained_backbone != backbone:
        raise DataError(
            model_path,
            f"trained with backbone {trained_backbone!r} but params backbone is {backbone!r}; "
            "allowed: the same backbone (rerun the train stage)",
            kind="provenance_mismatch",
        )
    return trained_extractor(trained, model_path, device), trained


# --------------------------------------------------------------------------- plot


def plot_per_class_ap(path: Path, classes, results: dict[str, dict]) -> None:
    """Grouped bars of per-class AP, original vs SCN, one panel per setting (Figure 6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(results)
    fig, axes = plt.subplots(
        len(settings),
        1,
        figsize=(max(6, 0.7 * len(classes) + 2), 3.2 * len(settings)),
        squeeze=False,
    )
    x = np.arange(len(classes))
    for ax, setting in zip(axes[:, 0], settings, strict=True):
        for k, (net, colour) in enumerate(zip(NETWORKS, ("tab:gray", "tab:blue"), strict=True)):
            per = results[setting][net]["per_class"]
            ap = [np.nan if per[c]["ap"] is None else 100 * per[c]["ap"] for c in classes]
            m = results[setting][net]["map"]
            label = f"{net} (mAP {100 * m:.1f})" if m is not None else net
            ax.bar(x + (k - 0.5) * 0.4, ap, width=0.4, color=colour, label=label)
        ax.set_xticks(x, classes, rotation=45, ha="right")
        ax.set_ylabel("AP (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{setting}: per-class AP, original vs SCN features")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    write_figure(fig, path, dpi=110)


# --------------------------------------------------------------------------- stage


def lowshot_differences(
    scores_a: dict[str, dict[int, np.ndarray]],
    scores_b: dict[str, dict[int, np.ndarray]],
    labels: dict[str, np.ndarray],
    n_boot: int,
    seed: int,
    records: dict[str, dict],
) -> dict[str, dict[str, dict]]:
    """Network b - network a low-shot mAP per setting and k: ``{setting: {"k<k>": {diff,
    lo, hi, verdict}}}``, the mean over the draws with its paired bootstrap 95% interval
    over the test items and the draws (``scores_*[setting][k]``: (samples, M, C) on the
    same draws; ``labels[setting]`` (M, C)). Each k's resampled differences are added to
    ``records`` under :func:`~pipeline.evaluate.bootstrap.lowshot_key` (for pooling over
    training seeds)."""
    out: dict[str, dict[str, dict]] = {}
    for setting, per_k in scores_b.items():
        out[setting] = {}
        for k, b in per_k.items():
            y = labels[setting]
            value, diffs = draws_differences(scores_a[setting][k], b, y, n_boot, seed)
            ci, records[lowshot_key(setting, k)] = paired_difference(
                value, diffs, n_boot, seed, len(y), f"low-shot {setting} k={k} ({len(b)} draws)"
            )
            out[setting][f"k{k}"] = ci.to_short_dict()
    return out


def run_classify(
    dataset_ref: DatasetRef,
    backbone: str,
    net: NetworkConfig,
    cfg: ClassifyConfig,
    offset_scale: str,
    splits: tuple[str, str],
    paths: PathsConfig,
    provenance: dict[str, Any],
    original_provenance: dict[str, Any],
) -> dict:
    """DVC stage ``classify``: extract (or reuse) the features of the trained bottom stream
    (``paths.model_file``) on the (train, test) ``splits``, run the SVM protocol on them,
    and compare with the original network's results of stage ``classify_original``
    (``paths.original_classify_dir``; checked to have been made with
    ``original_provenance``, that stage's params now): paired bootstrap of each mAP
    difference, low-shot on the same draws, and the context experiment (the original
    network's features of the top patch, offsets scaled by ``offset_scale``)."""
    rng = seed_everything(cfg.seed)
    device = resolve_device(cfg.device, "classify.device")
    datasets = {
        role: open_split(dataset_ref, split, stage="classify")
        for role, split in zip(ROLES, splits, strict=True)
    }
    classes = datasets["train"].classes

    extractor, trained = load_trained_extractor(paths.model_file, backbone, device)
    if extractor.input_size != net.input_size:
        log.warning(
            "trained input size %d differs from network.input_size %d",
            extractor.input_size, net.input_size,
        )  # fmt: skip
    feats = network_features(
        Path(paths.classify), datasets, extractor, dataset_ref.name, cfg.batch_size,
        json.dumps(provenance),
    )  # fmt: skip
    original = read_original_classify(
        paths.original_classify_file,
        original_provenance,
        list(classes),
        {s: {r: feats[s][r]["labels"] for r in ROLES} for s in SETTINGS},
        cfg,
    )
    fitted = fit_network(feats, classes, cfg, TRAINED, device)

    metrics: dict = {"device": str(device), "classes": list(classes)}
    results: dict[str, dict] = {}
    distributions: dict[str, dict] = {}
    for setting in SETTINGS:
        res: dict = {ORIGINAL: original.results[setting], TRAINED: fitted[setting].to_dict()}
        res["map_diff"] = difference(res[ORIGINAL]["map"], res[TRAINED]["map"])
        if cfg.bootstrap:
            labels = feats[setting]["test"]["labels"]  # the original's, checked equal
            value, diffs = bootstrap_differences(
                original.scores[setting], fitted[setting].scores, labels, cfg.bootstrap, cfg.seed
            )
            ci, distributions[setting] = paired_difference(
                value, diffs, cfg.bootstrap, cfg.seed, len(labels), f"{setting} mAP"
            )
            res["map_diff_ci"] = ci.to_dict()
        res["map_11point_diff"] = difference(
            res[ORIGINAL]["map_11point"], res[TRAINED]["map_11point"]
        )
        res["n_train"] = original.n_train[setting]
        res["n_test"] = original.n_test[setting]
        results[setting] = res
    metrics.update(results)
    if trained.context_module is not None:
        obj = {
            ORIGINAL: {
                role: read_features(
                    paths.original_classify_dir, ds, "obj", ORIGINAL, dataset_ref.name
                )
                for role, ds in datasets.items()
            },
            TRAINED: feats["obj"],
        }
        metrics["context"] = context_classification(
            cfg, offset_scale, datasets, obj, trained, rng, device
        )
    else:  # a bottom stream trained without a context module (method doersch): no h3
        log.info("context classification skipped: %s has no context module", paths.model_file)
        metrics["context"] = {"skipped": f"no context module (method {trained.method})"}
    trained_lowshot: dict = {}  # setting -> k -> (samples, M, C) test scores of each draw
    try:
        metrics["lowshot"] = merge_lowshot(
            original.lowshot,
            lowshot_network(cfg, classes, feats, TRAINED, device, trained_lowshot),
        )
    except ValueError as err:
        raise DataError(original.path, f"low-shot: {err}", kind="provenance_mismatch") from err
    metrics["lowshot_diff"] = {}
    if cfg.bootstrap:
        test_labels = {s: feats[s]["test"]["labels"] for s in trained_lowshot}
        metrics["lowshot_diff"] = lowshot_differences(
            original.lowshot_scores, trained_lowshot, test_labels, cfg.bootstrap, cfg.seed,
            distributions,
        )  # fmt: skip
    # for intervals pooled over training seeds (experiments/results.py); none: removed
    write_distributions(Path(paths.classify) / DISTRIBUTIONS_FILE, distributions)
    metrics["skipped"] = {role: ds.policy.metrics() for role, ds in datasets.items()}
    plot_per_class_ap(paths.plot_file(PLOT_NAME), classes, results)
    plot_lowshot(paths.plot_file(LOWSHOT_PLOT), metrics["lowshot"]["settings"], NETWORKS)
    label = "SCN - original" if trained.method == "scn" else f"{trained.method} - original"
    why = ("low-shot evaluation disabled (classify.lowshot_k: [])" if not cfg.lowshot_k
           else "paired bootstrap disabled (classify.bootstrap: 0)")  # fmt: skip
    plot_lowshot_diff(paths.plot_file(LOWSHOT_DIFF_PLOT), metrics["lowshot_diff"], label, why)
    return metrics
