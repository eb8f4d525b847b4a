"""Stage ``classify``: linear-SVM classification, original vs SCN features side by side.

Paper sections 4.2 to 4.4 (Tables 1 and 2, Figure 6); protocol in
:mod:`pipeline.evaluate.svm` (VISSL's VOC07 benchmark).

- **Obj**: ground-truth objects of ``data.eval_train_split`` train one SVM per class,
  those of ``data.eval_test_split`` test them (single label, one-vs-rest AP per class).
- **Img**: whole images, multi-label with VOC image labels 1 / -1 / 0.
- Both with h1 of the ORIGINAL network (``build_backbone(...).features``) and of the
  trained SCN bottom stream (``load_trained(<paths.train>/model.pt).features``).
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
(:mod:`pipeline.evaluate.lowshot`); mean and std mAP per k in ``lowshot`` and
``<paths.plots>/classify_lowshot.png``.

Outputs: feature caches ``<paths.classify>/*.h5`` (provenance-checked, reused across
runs), ``<paths.classify>/bootstrap.npz`` (each setting's resampled differences, which
every training seed's run shares, for intervals pooled over seeds:
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

from pipeline.data.voc import DatasetRef, VOCDataset, open_split
from pipeline.devices import resolve_device
from pipeline.errors import DataError
from pipeline.evaluate.bootstrap import (
    bootstrap_differences,
    percentile_interval,
    write_distributions,
)
from pipeline.evaluate.features import (
    Extractor,
    ObjectTable,
    cached_features,
    original_extractor,
)
from pipeline.evaluate.lowshot import evaluate_lowshot, plot_lowshot
from pipeline.evaluate.svm import l2_normalize, train_and_test, train_multiclass
from pipeline.io import write_figure
from pipeline.provenance import sha256_file
from pipeline.seed import seed_everything

if TYPE_CHECKING:
    from pipeline.artifacts import PathsConfig
    from pipeline.backbones.config import NetworkConfig
    from pipeline.evaluate.config import ClassifyConfig

log = logging.getLogger(__name__)

NETWORKS = ("original", "scn")
BOOTSTRAP_FILE = "bootstrap.npz"  # per setting: the (B,) mAP differences on the resamples
PLOT_NAME = "classify_ap.png"
LOWSHOT_PLOT = "classify_lowshot.png"


# --------------------------------------------------------------------------- extractors


def scn_extractor(
    model_path: Path, backbone: str, device: torch.device
) -> tuple[Extractor, object]:
    """Extractor of the trained bottom stream in ``model_path``, and the TrainedSCN."""
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
    extractor = Extractor(
        network="scn",
        fn=trained.features,
        input_size=trained.input_size,
        mean=trained.mean,
        std=trained.std,
        backbone=trained_backbone,
        layer=str(trained.config.get("layer", "")),
        weights_sha256=str(trained.config.get("provenance", {}).get("weights_sha256", "")),
        model_sha256=sha256_file(model_path),
        device=device,
    )
    return extractor, trained


# --------------------------------------------------------------------------- context pairs


def offset_function():
    """The pairs stage's offset function ``(top, bottom, width, height, scale) -> (M, 8)``."""
    from pipeline.pairs.manifest import pair_offsets

    return pair_offsets


def object_pairs(
    table: ObjectTable, max_pairs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(top, bottom) row indices of ordered pairs of distinct non-difficult objects of one
    image; a seeded sample of at most ``max_pairs``, in (image, top, bottom) order."""
    tops, bottoms = [], []
    keep = np.flatnonzero(~table.difficult)
    by_image: dict[int, list[int]] = {}
    for r in keep:
        by_image.setdefault(int(table.image_index[r]), []).append(int(r))
    for rows in by_image.values():
        for i in rows:
            for j in rows:
                if i != j:
                    tops.append(i)
                    bottoms.append(j)
    top, bottom = np.array(tops, dtype=np.int64), np.array(bottoms, dtype=np.int64)
    if len(top) > max_pairs:
        pick = np.sort(rng.choice(len(top), size=max_pairs, replace=False))
        top, bottom = top[pick], bottom[pick]
    return top, bottom


def context_offsets(
    ds: VOCDataset, table: ObjectTable, top: np.ndarray, bottom: np.ndarray, scale: str
) -> np.ndarray:
    """(M, 8) offsets o_ij = b_top - b_bottom as the pairs stage computes them."""
    fn = offset_function()
    sizes = np.array([(im.width, im.height) for im in ds.images], dtype=np.float64)  # (n, 2)
    wh = sizes[table.image_index[top]]  # (M, 2)
    out = np.zeros((len(top), 8), dtype=np.float32)
    for w, h in np.unique(wh, axis=0):  # one call per image size (the function takes scalars)
        m = (wh[:, 0] == w) & (wh[:, 1] == h)
        out[m] = fn(table.box[top[m]], table.box[bottom[m]], float(w), float(h), scale)
    return out


@torch.no_grad()
def predict_h3(trained, h1: np.ndarray, offset: np.ndarray, batch_size: int) -> np.ndarray:
    """(M, D) SCN h1 of bottom patches and (M, 8) offsets -> (M, D_T) h3."""
    out = []
    for s in range(0, len(h1), max(batch_size, 1)):
        h = torch.from_numpy(
            np.ascontiguousarray(h1[s : s + batch_size], dtype=np.float32)
        )  # (B, D)
        o = torch.from_numpy(np.ascontiguousarray(offset[s : s + batch_size]))  # (B, 8)
        out.append(trained.context(h, o).float().cpu().numpy())  # (B, D_T)
    dim = int(trained.config.get("target_dim", 0))
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def context_features(
    cfg: ClassifyConfig,
    offset_scale: str,
    splits: dict[str, VOCDataset],
    obj: dict[str, dict[str, dict[str, np.ndarray]]],
    trained,
    rng: np.random.Generator,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """The inputs of paper Table 1 per role (train, test): ``own``, ``context``, ``both``
    feature blocks and the top patch's class ``y``; and the same-class share of the pairs."""
    data: dict[str, dict[str, np.ndarray]] = {}
    shares: dict[str, float] = {}
    for role in ("train", "test"):
        ds = splits[role]
        orig, scn = obj["original"][role], obj["scn"][role]
        table = ObjectTable(
            orig["image_index"], orig["box"], orig["class_index"], orig["difficult"]
        )
        top, bottom = object_pairs(table, cfg.max_context_pairs, rng)
        if len(top) == 0:
            raise DataError(ds.root, f"split {ds.split!r}: no image has two non-difficult objects")
        offset = context_offsets(ds, table, top, bottom, offset_scale)  # (M, 8)
        own = l2_normalize(orig["features"][top])  # (M, D)
        h3 = l2_normalize(
            predict_h3(trained, scn["features"][bottom], offset, cfg.batch_size)
        )  # (M, D_T)
        data[role] = {
            "own": own,
            "context": h3,
            "both": np.concatenate([own, h3], axis=1),  # (M, D + D_T)
            "y": table.class_index[top].astype(np.int64),
        }
        shares[role] = float(np.mean(table.class_index[top] == table.class_index[bottom]))
    return data, shares


def context_classification(
    cfg: ClassifyConfig,
    offset_scale: str,
    splits: dict[str, VOCDataset],
    obj: dict[str, dict[str, dict[str, np.ndarray]]],
    trained,
    rng: np.random.Generator,
    device: torch.device | None = None,
) -> dict:
    """Paper Table 1 on pairs of ground-truth objects; accuracies of the three inputs."""
    data, shares = context_features(cfg, offset_scale, splits, obj, trained, rng)
    result: dict = {
        "n_train_pairs": len(data["train"]["y"]),
        "n_test_pairs": len(data["test"]["y"]),
        "same_class_share_train": round(shares["train"], 6),
        "same_class_share_test": round(shares["test"], 6),
    }
    counts = np.bincount(data["train"]["y"])
    result["majority_baseline"] = round(float(np.mean(data["test"]["y"] == counts.argmax())), 6)
    for name in ("own", "context", "both"):
        res = train_multiclass(
            data["train"][name],
            data["train"]["y"],
            data["test"][name],
            data["test"]["y"],
            cfg.costs,
            cfg.cv_folds,
            cfg.seed,
            workers=cfg.workers,
            solver=cfg.solver,
            device=device,
            threads=cfg.threads,
        )
        result[name] = res.to_dict()
        log.info("context %s: accuracy %.4f (C=%g)", name, res.accuracy, res.cost)
    return result


# --------------------------------------------------------------------------- low-shot


def lowshot_classification(
    cfg: ClassifyConfig,
    classes,
    feats: dict[str, dict[str, dict[str, dict[str, np.ndarray]]]],
    device: torch.device | None = None,
) -> dict:
    """The low-shot protocol on Obj and Img for both networks (empty when disabled)."""
    out: dict = {"k": list(cfg.lowshot_k), "n_samples": cfg.lowshot_samples, "settings": {}}
    if not cfg.lowshot_k:
        log.info("low-shot evaluation disabled (classify.lowshot_k is empty)")
        return out
    for setting in ("obj", "img"):
        f = feats[setting]
        out["settings"][setting] = evaluate_lowshot(
            {net: (f[net]["train"]["features"], f[net]["train"]["labels"]) for net in NETWORKS},
            {net: (f[net]["test"]["features"], f[net]["test"]["labels"]) for net in NETWORKS},
            classes, cfg.lowshot_k, cfg.lowshot_samples, cfg.costs, cfg.cv_folds, cfg.seed,
            desc=f"lowshot {setting}", solver=cfg.solver, device=device, threads=cfg.threads,
            workers=cfg.workers,
        )  # fmt: skip
    return out


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
        for k, (net, colour) in enumerate((("original", "tab:gray"), ("scn", "tab:blue"))):
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


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(b - a, 6)


def run_classify(
    dataset_ref: DatasetRef,
    backbone: str,
    net: NetworkConfig,
    cfg: ClassifyConfig,
    offset_scale: str,
    splits: tuple[str, str],
    paths: PathsConfig,
    provenance: dict[str, Any],
) -> dict:
    """DVC stage ``classify``: extract (or reuse) the features of the original network and
    of the trained bottom stream (``paths.model_file``) on the (train, test) ``splits``, run
    the SVM protocol and the context experiment (offsets scaled by ``offset_scale``)."""
    rng = seed_everything(cfg.seed)
    device = resolve_device(cfg.device, "classify.device")
    cache_dir = Path(paths.classify)
    params_json = json.dumps(provenance)
    datasets = {
        role: open_split(dataset_ref, split, stage="classify")
        for role, split in zip(("train", "test"), splits, strict=True)
    }
    classes = datasets["train"].classes

    from pipeline.backbones import build_backbone

    original = original_extractor(
        build_backbone(backbone, net.weights, input_size=net.input_size), device
    )
    scn, trained = scn_extractor(paths.model_file, backbone, device)
    if scn.input_size != original.input_size:
        log.warning(
            "SCN input size %d differs from network.input_size %d",
            scn.input_size,
            original.input_size,
        )

    feats: dict[str, dict[str, dict[str, dict[str, np.ndarray]]]] = {}
    for setting in ("obj", "img"):
        feats[setting] = {}
        for ext in (original, scn):
            feats[setting][ext.network] = {
                role: cached_features(
                    cache_dir, ds, setting, ext, dataset_ref.name, cfg.batch_size, params_json
                )
                for role, ds in datasets.items()
            }

    metrics: dict = {"device": str(device), "classes": list(classes)}
    results: dict[str, dict] = {}
    distributions: dict[str, dict] = {}
    for setting in ("obj", "img"):
        res: dict = {}
        fitted = {}
        for net in NETWORKS:
            tr, te = feats[setting][net]["train"], feats[setting][net]["test"]
            out = train_and_test(
                tr["features"],
                tr["labels"],
                te["features"],
                te["labels"],
                classes,
                cfg.costs,
                cfg.cv_folds,
                cfg.seed,
                desc=f"{setting} {net}",
                workers=cfg.workers,
                solver=cfg.solver,
                device=device,
                threads=cfg.threads,
            )
            res[net], fitted[net] = out.to_dict(), out
            log.info("%s %s: mAP %.4f (11-point %.4f)", setting, net, out.map, out.map_11point)
        res["map_diff"] = _diff(res["original"]["map"], res["scn"]["map"])
        if cfg.bootstrap:
            labels = feats[setting]["original"]["test"]["labels"]
            value, diffs = bootstrap_differences(
                fitted["original"].scores, fitted["scn"].scores, labels, cfg.bootstrap, cfg.seed
            )
            ci = percentile_interval(value, diffs, cfg.bootstrap)
            distributions[setting] = {"value": value, "diffs": diffs, "seed": cfg.seed,
                                      "n_boot": cfg.bootstrap, "n_test": len(labels)}  # fmt: skip
            res["map_diff_ci"] = ci.to_dict()
            log.info(
                "%s: mAP difference %.4f, 95%% interval [%.4f, %.4f] over %d resamples: %s",
                setting, ci.value, ci.ci_low, ci.ci_high, ci.n_boot, ci.verdict,
            )  # fmt: skip
        res["map_11point_diff"] = _diff(res["original"]["map_11point"], res["scn"]["map_11point"])
        res["n_train"] = len(feats[setting]["original"]["train"]["features"])
        res["n_test"] = len(feats[setting]["original"]["test"]["features"])
        results[setting] = res
    metrics.update(results)
    if distributions:  # for intervals pooled over training seeds (experiments/results.py)
        write_distributions(cache_dir / BOOTSTRAP_FILE, distributions)
    else:  # classify.bootstrap 0: no stale distributions of an earlier run
        (cache_dir / BOOTSTRAP_FILE).unlink(missing_ok=True)
    if trained.context_module is not None:
        metrics["context"] = context_classification(
            cfg, offset_scale, datasets, feats["obj"], trained, rng, device
        )
    else:  # a bottom stream trained without a context module (method doersch): no h3
        log.info("context classification skipped: %s has no context module", paths.model_file)
        metrics["context"] = {"skipped": f"no context module (method {trained.method})"}
    metrics["lowshot"] = lowshot_classification(cfg, classes, feats, device)
    metrics["skipped"] = {role: ds.policy.metrics() for role, ds in datasets.items()}
    plot_per_class_ap(paths.plot_file(PLOT_NAME), classes, results)
    plot_lowshot(paths.plot_file(LOWSHOT_PLOT), metrics["lowshot"]["settings"], NETWORKS)
    return metrics
