"""Stage ``diagnose``: is there room for context pretraining on this dataset and
backbone, and is there context to learn? (REFERENCE.md sections 7 and 8.)

Cheap measures, each next to the baseline it must beat:

- **original**: Obj mAP of the original network (the classify stage's protocol and code:
  :func:`pipeline.evaluate.classify.features.compute_features` crops, the same head, and
  :func:`pipeline.evaluate.classify.svm.train_and_test`) on ``data.eval_train_split`` /
  ``data.eval_test_split``, at most ``diagnose.max_objects`` objects per split (whole
  images, seeded);
- **ceiling**: the same protocol on h1 of the SCN-trainable head fine-tuned with the
  train objects' labels (:mod:`pipeline.diagnose.ceiling`); **headroom** = ceiling -
  original, overall and per class, and (``classify.bootstrap`` resamples, seeded by
  ``diagnose.seed``) ``headroom.map_ci``: the paired bootstrap 95% interval of the
  ceiling - original Obj difference over the test objects (classify's bootstrap,
  :func:`pipeline.evaluate.bootstrap.paired_bootstrap`) and its ``half_width``: how fine
  an Obj difference the test split can measure (issue 24's acceptance bar,
  ``experiments/acceptance.py``);
- **context**: on ordered pairs of ground-truth objects of one image (the classify
  stage's :func:`~pipeline.evaluate.classify.context.object_pairs` and offsets), the accuracy of
  predicting the top object's class from [one-hot bottom class, o_ij] (fit on train
  pairs, tested on test pairs) against the majority-class rate, and their ratio;
- **targets** (R^2, share of held-out top-stream target variance explained, as the train
  stage's ``test_explained``): (a) ``class_gt``: by the top object's own class on the
  ground-truth pairs (train class means of the original features of the object crops);
  (b) ``oracle_proposals``: by the class of the best-matching ground-truth object at IoU
  >= ``diagnose.match_iou`` (else background) of the top patch of the configured
  proposal mechanism's pairs (``paths.pairs_file``, ``paths.targets_file`` of
  ``data.scn_split`` to fit, ``data.eval_test_split`` to test); (c) ``ridge_*``: a ridge
  map from the frozen original [h1_j, o_ij] (and h1_j or o_ij alone) to the top target:
  the no-training baseline a trained SCN must beat (compare with
  ``metrics/train.json``'s ``expl``, its ``test_explained``);
- **proposals**: per split, the share of the pairs' patches matching a ground-truth
  object at IoU >= ``match_iou`` and the share of pairs whose two patches overlap less
  than ``diagnose.low_iou``.

Two DVC stages compute them. ``diagnose_objects`` (:func:`run_diagnose_objects`) takes
the measures that need only the ground truth (original, ceiling, headroom, low-shot,
context, ``class_gt``): they do not depend on the proposal mechanism, so they are
computed once per dataset, backbone and evaluation setting. ``diagnose``
(:func:`run_diagnose`) takes the proposal pairs' measures (``oracle_proposals``,
``ridge_*``, proposals) and writes the whole diagnosis with the ground-truth part read
from ``metrics/details/diagnose_objects.json``, checked to come from the same dataset, backbone,
weights, scope, input size and splits.

Outputs: the returned metrics (``metrics/details/diagnose_objects.json`` and
``metrics/details/diagnose.json`` via the runner, headline in ``metrics/<stage>.json``),
``<paths.plots>/diagnose.png`` (diagnose) and
``<paths.plots>/diagnose_lowshot.png`` (diagnose_objects: the low-shot Obj protocol of
classify, ``classify.lowshot_k`` and ``lowshot_samples``, for the original network and the
ceiling on the same draws; classify's plot has SCN's).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline.boxes import pair_iou
from pipeline.data.images import open_scn_split
from pipeline.data.voc import DatasetRef, VOCDataset, open_split
from pipeline.devices import resolve_device
from pipeline.diagnose.ceiling import head_features, train_ceiling
from pipeline.diagnose.measures import (
    class_mean_r2,
    class_means,
    context_predictability,
    match_labels,
    ridge_predictions,
    ridge_r2,
)
from pipeline.errors import DataError
from pipeline.evaluate.bootstrap import paired_bootstrap
from pipeline.evaluate.classify.context import context_offsets, object_pairs
from pipeline.evaluate.classify.features import (
    Extractor,
    ObjectTable,
    compute_features,
    trunk_extractor,
)
from pipeline.evaluate.classify.lowshot import evaluate_lowshot, plot_lowshot
from pipeline.evaluate.classify.svm import train_and_test
from pipeline.evaluate.compare import check_same, require_file
from pipeline.models.context import fit_on_features
from pipeline.pairs.overlap import SUBSETS, overlapping, split_explained
from pipeline.seed import seed_everything

if TYPE_CHECKING:
    from pipeline.artifacts import PathsConfig
    from pipeline.backbones.config import NetworkConfig
    from pipeline.diagnose.config import DiagnoseConfig

log = logging.getLogger(__name__)

OBJECTS_STAGE = "diagnose_objects"  # the ground-truth part, once per dataset and backbone
ROLES = ("train", "test")
PLOT_NAME = "diagnose.png"
LOWSHOT_PLOT = "diagnose_lowshot.png"  # low-shot Obj mAP against k, original vs ceiling


def _num(v: float | None, digits: int = 6) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), digits)


# --------------------------------------------------------------------------- objects


def cap_objects(ds: VOCDataset, max_objects: int, rng: np.random.Generator) -> VOCDataset:
    """``ds`` itself when it has at most ``max_objects`` objects, else a view of whole
    images in a seeded order up to that many objects (at least one image), in split order."""
    counts = np.array([len(im.objects) for im in ds.images])
    if counts.sum() <= max_objects:
        return ds
    keep, total = [], 0
    for i in rng.permutation(len(ds.images)):
        if keep and total + counts[i] > max_objects:
            continue
        keep.append(int(i))
        total += int(counts[i])
    log.info("%s: %d of %d objects (%d images)", ds.split, total, counts.sum(), len(keep))
    return ds.subset(sorted(keep))


def object_trunks(
    ds: VOCDataset, ext: Extractor, trunk_shape: tuple[int, ...], batch_size: int
) -> dict[str, np.ndarray]:
    """The obj setting of ``ds`` with trunk rows ``x`` (N, *trunk_shape) as features."""
    arrays = compute_features(ds, "obj", ext, batch_size)
    arrays["x"] = arrays.pop("features").reshape(-1, *trunk_shape)
    return arrays


# --------------------------------------------------------------------------- pairs


def _gt_pairs(
    ds: VOCDataset, arr: dict[str, np.ndarray], max_pairs: int, offset_scale: str, rng
) -> dict[str, np.ndarray]:
    table = ObjectTable(arr["image_index"], arr["box"], arr["class_index"], arr["difficult"])
    top, bottom = object_pairs(table, max_pairs, rng)
    if len(top) == 0:
        raise DataError(ds.root, f"split {ds.split!r}: no image has two non-difficult objects")
    return {
        "top": top,
        "bottom": bottom,
        "offset": context_offsets(ds, table, top, bottom, offset_scale),  # (M, 8)
        "top_class": table.class_index[top].astype(np.int64),
        "bottom_class": table.class_index[bottom].astype(np.int64),
    }


def proposal_pairs(
    ds: VOCDataset,
    pairs_file: Path,
    targets_file: Path,
    bb,
    cfg: DiagnoseConfig,
    rng: np.random.Generator,
) -> dict:
    """Quality of the pairs of ``pairs_file`` against the ground truth of ``ds``, and a
    seeded sample of at most ``cfg.max_pairs`` of them with their top-stream features.
    Unannotated images (``data.scn_images``) have no quality and no ``top_label`` (None)."""
    from pipeline.pairs.manifest import read_manifest
    from pipeline.targets.cache import expected_attrs, open_targets

    if not Path(pairs_file).is_file():
        raise DataError(pairs_file, "pairs file not found (run the pairs stage)", "missing_pairs")
    m = read_manifest(pairs_file)
    n_classes = len(ds.classes)
    annotated = getattr(ds, "annotated", True)
    in_split = set(ds.ids)
    known = np.array([image_id in in_split for image_id in m.image_ids], dtype=bool)
    if not known.any():
        raise DataError(
            pairs_file, f"none of its images is in split {ds.split!r} of {ds.root}", "mismatch"
        )
    if not known.all():
        log.warning("%s: %d images not in the dataset; their pairs are left out",
                    pairs_file, int((~known).sum()))  # fmt: skip
    label = np.full(len(m.patch_box), -1, dtype=np.int64)  # -1: image unknown
    for k, image_id in enumerate(m.image_ids):
        rows = np.flatnonzero(m.patch_image == k)
        if not known[k] or len(rows) == 0:
            continue
        if not annotated:
            label[rows] = n_classes  # kept; no class is known
            continue
        im = ds.by_id(image_id)
        gt = np.array([o.box for o in im.objects], dtype=np.float64).reshape(-1, 4)
        cls = np.array([ds.classes.index(o.name) for o in im.objects], dtype=np.int64)
        label[rows], _ = match_labels(m.patch_box[rows], gt, cls, n_classes, cfg.match_iou)
    ok_patch = label >= 0
    ok_pair = ok_patch[m.top] & ok_patch[m.bottom]
    top, bottom, offset = m.top[ok_pair], m.bottom[ok_pair], m.offset[ok_pair]
    iou = pair_iou(m.patch_box[top], m.patch_box[bottom])
    quality = {
        "patches": int(ok_patch.sum()),
        "share_patches_matching": _num(np.mean(label[ok_patch] < n_classes)),
        "pairs": len(top),
        "share_pairs_low_iou": _num(np.mean(iou < cfg.low_iou)) if len(top) else None,
        "share_pairs_overlapping": _num(np.mean(overlapping(iou))) if len(top) else None,
    }
    if not annotated:
        quality = None
    if len(top) > cfg.max_pairs:
        pick = np.sort(rng.choice(len(top), size=cfg.max_pairs, replace=False))
        top, bottom, offset, iou = top[pick], bottom[pick], offset[pick], iou[pick]
    need = np.unique(np.concatenate([top, bottom]))
    fh = open_targets(targets_file, expected_attrs(bb, pairs_path=pairs_file))
    with fh:
        feats = np.asarray(fh["features"][need], dtype=np.float64)  # (U, D)
    where = {int(p): r for r, p in enumerate(need)}
    ti = np.array([where[int(p)] for p in top], dtype=np.int64)
    bi = np.array([where[int(p)] for p in bottom], dtype=np.int64)
    return {
        "quality": quality,
        "target": feats[ti],  # (M, D)
        "h1": feats[bi],  # (M, D): the frozen original = the top stream
        "offset": np.asarray(offset, dtype=np.float64),  # (M, 8)
        "top_label": label[top] if annotated else None,  # (M,) class or n_classes (background)
        "image": m.patch_image[top].astype(np.int64),  # (M,) image of each pair
        "iou": iou,  # (M,) IoU of each pair's two patches
    }


# --------------------------------------------------------------------------- plot


def plot_diagnose(path: Path, classes, original: dict, ceiling: dict, shares: dict) -> None:
    """Per-class AP bars, original vs ceiling; and a panel of predictability shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.io import write_figure

    fig, (ax, bx) = plt.subplots(
        1, 2, figsize=(max(8, 0.6 * len(classes) + 6), 4), gridspec_kw={"width_ratios": [3, 1.4]}
    )
    x = np.arange(len(classes))
    for k, (name, res, colour) in enumerate(
        (("original", original, "tab:gray"), ("ceiling", ceiling, "tab:green"))
    ):
        per = res["per_class"]
        ap = [np.nan if per[c]["ap"] is None else 100 * per[c]["ap"] for c in classes]
        label = f"{name} (mAP {100 * res['map']:.1f})" if res["map"] is not None else name
        ax.bar(x + (k - 0.5) * 0.4, ap, width=0.4, color=colour, label=label)
    ax.set_xticks(x, classes, rotation=45, ha="right")
    ax.set_ylabel("Obj AP (%)")
    ax.set_ylim(0, 115)  # room above 100 for the legend
    ax.set_yticks(np.arange(0, 101, 20))
    ax.set_title("Room: original network vs supervised ceiling")
    ax.legend(loc="upper center", ncol=2, fontsize=8)
    names = list(shares)
    vals = [np.nan if shares[n] is None else 100 * shares[n] for n in names]
    bx.barh(np.arange(len(names)), vals, color="tab:blue")
    bx.set_yticks(np.arange(len(names)), names, fontsize=8)
    bx.invert_yaxis()
    bx.set_xlabel("%")
    bx.set_title("Context: predictability")
    for i, v in enumerate(vals):
        if np.isfinite(v):
            bx.text(max(v, 0), i, f" {v:.1f}", va="center", fontsize=7)
    fig.tight_layout()
    write_figure(fig, path, dpi=110)


# --------------------------------------------------------------------------- stage


def object_diagnostics(
    datasets: dict[str, VOCDataset],
    bb,
    scope: str,
    cfg: DiagnoseConfig,
    costs: tuple[float, ...],
    cv_folds: int,
    offset_scale: str,
    device: torch.device,
    rng: np.random.Generator,
    seconds: dict[str, float] | None = None,
    solver: str = "newton",
    lowshot_k: tuple[int, ...] = (),
    lowshot_samples: int = 1,
    bootstrap: int = 0,
) -> dict:
    """The measures that need only the ground truth of ``datasets`` (roles ``train`` and
    ``test``): original and ceiling Obj mAP, headroom (with ``bootstrap`` > 0, its paired
    bootstrap interval over the test objects), context predictability and the
    share of target variance explained by the top object's class on ground-truth pairs;
    with ``lowshot_k``, the low-shot Obj protocol (classify's,
    :mod:`pipeline.evaluate.classify.lowshot`) for the original network and the ceiling on
    the same draws (``lowshot``).
    No proposal, pair or target cache is read, so a dataset can be judged on these before
    any other stage runs (``experiments/scenes_candidates.py``)."""
    seconds = {} if seconds is None else seconds
    t0 = time.perf_counter()
    classes = datasets["train"].classes
    n_classes = len(classes)
    trunk, head = bb.split(scope)
    with torch.inference_mode():
        trunk_shape = tuple(trunk(torch.zeros(1, 3, bb.input_size, bb.input_size)).shape[1:])
    ext = trunk_extractor(bb, trunk, device)
    obj = {r: object_trunks(ds, ext, trunk_shape, cfg.batch_size) for r, ds in datasets.items()}
    seconds["trunk"] = time.perf_counter() - t0

    def svm(feats: dict[str, np.ndarray], name: str):
        res = train_and_test(
            feats["train"], obj["train"]["labels"], feats["test"], obj["test"]["labels"],
            classes, costs, cv_folds, cfg.seed, desc=f"obj {name}", workers=cfg.workers,
            solver=solver, device=device,
        )  # fmt: skip
        log.info("obj %s: mAP %.4f (11-point %.4f)", name, res.map, res.map_11point)
        return res

    t = time.perf_counter()
    h1 = {r: head_features(head, obj[r]["x"], cfg.batch_size, device) for r in obj}
    original_fit = svm(h1, "original")
    original = original_fit.to_dict()
    seconds["original"] = time.perf_counter() - t

    t = time.perf_counter()
    keep = ~obj["train"]["difficult"]
    ceiling_fit = train_ceiling(
        head, obj["train"]["x"][keep], obj["train"]["class_index"][keep], n_classes,
        epochs=cfg.ceiling_epochs, lr=cfg.ceiling_lr, batch_size=cfg.ceiling_batch_size,
        holdout=cfg.ceiling_holdout, patience=cfg.ceiling_patience, seed=cfg.seed,
        device=device,
    )  # fmt: skip
    tuned = {r: head_features(ceiling_fit.head, obj[r]["x"], cfg.batch_size, device) for r in obj}
    ceiling_svm = svm(tuned, "ceiling")
    ceiling = ceiling_svm.to_dict()
    ceiling["training"] = ceiling_fit.to_dict()
    seconds["ceiling"] = time.perf_counter() - t

    headroom = {
        "map": _num(None if None in (original["map"], ceiling["map"])
                    else ceiling["map"] - original["map"]),
        "map_11point": _num(None if None in (original["map_11point"], ceiling["map_11point"])
                            else ceiling["map_11point"] - original["map_11point"]),
        "per_class": {
            c: _num(None if None in (original["per_class"][c]["ap"], ceiling["per_class"][c]["ap"])
                    else ceiling["per_class"][c]["ap"] - original["per_class"][c]["ap"])
            for c in classes
        },
    }  # fmt: skip
    if bootstrap:
        t = time.perf_counter()
        ci = paired_bootstrap(original_fit.scores, ceiling_svm.scores, obj["test"]["labels"],
                              bootstrap, cfg.seed)  # fmt: skip
        headroom["map_ci"] = {**ci.to_dict(), "half_width": _num((ci.ci_high - ci.ci_low) / 2)}
        log.info("headroom %.4f, 95%% interval [%.4f, %.4f] over %d test objects",
                 ci.value, ci.ci_low, ci.ci_high, len(obj["test"]["labels"]))  # fmt: skip
        seconds["headroom_bootstrap"] = time.perf_counter() - t

    lowshot: dict = {"k": list(lowshot_k), "n_samples": lowshot_samples, "settings": {}}
    if lowshot_k:
        t = time.perf_counter()
        nets = {"original": h1, "ceiling": tuned}
        lowshot["settings"]["obj"] = evaluate_lowshot(
            {n: (f["train"], obj["train"]["labels"]) for n, f in nets.items()},
            {n: (f["test"], obj["test"]["labels"]) for n, f in nets.items()},
            classes, lowshot_k, lowshot_samples, costs, cv_folds, cfg.seed, desc="lowshot obj",
            solver=solver, device=device, workers=cfg.workers,
        )  # fmt: skip
        seconds["lowshot"] = time.perf_counter() - t

    # context and targets on ground-truth pairs
    t = time.perf_counter()
    gt = {r: _gt_pairs(datasets[r], obj[r], cfg.max_pairs, offset_scale, rng) for r in datasets}
    ctx = context_predictability(
        gt["train"]["bottom_class"], gt["train"]["offset"], gt["train"]["top_class"],
        gt["test"]["bottom_class"], gt["test"]["offset"], gt["test"]["top_class"],
        n_classes, cfg.context_model, cfg.seed,
    )  # fmt: skip
    context = ctx.to_dict(classes)
    context["model"] = cfg.context_model
    log.info("context: accuracy %.4f vs majority %.4f", ctx.accuracy, ctx.majority_rate)
    class_gt = class_mean_r2(
        h1["train"][gt["train"]["top"]], gt["train"]["top_class"],
        h1["test"][gt["test"]["top"]], gt["test"]["top_class"], n_classes,
    )  # fmt: skip
    seconds["gt_pairs"] = time.perf_counter() - t
    return {
        "n_objects": {r: len(obj[r]["x"]) for r in obj},
        "original": original,
        "ceiling": ceiling,
        "headroom": headroom,
        "context": context,
        "class_gt": class_gt,
        "n_gt_pairs": {r: len(gt[r]["top"]) for r in gt},
        "lowshot": lowshot,
    }


def run_diagnose_objects(
    dataset_ref: DatasetRef,
    backbone: str,
    net: NetworkConfig,
    cfg: DiagnoseConfig,
    costs: tuple[float, ...],
    cv_folds: int,
    offset_scale: str,
    eval_splits: tuple[str, str],
    paths: PathsConfig,
    solver: str = "newton",
    lowshot_k: tuple[int, ...] = (),
    lowshot_samples: int = 1,
    bootstrap: int = 0,
) -> dict:
    """DVC stage ``diagnose_objects``: the ground-truth part of the diagnosis
    (:func:`object_diagnostics`) on the (train, test) ``eval_splits``, and the low-shot
    plot. It reads no proposal, pair or target cache, so it runs once per dataset,
    backbone and evaluation setting: an experiment that changes the proposal mechanism
    reruns only stage ``diagnose``, which reads these metrics. SVMs: ``costs``,
    ``cv_folds``, ``solver``, low-shot ``lowshot_k`` and ``lowshot_samples``, and the
    headroom's ``bootstrap`` resamples (classify's)."""
    from pipeline.backbones import build_backbone

    rng = seed_everything(cfg.seed)
    device = resolve_device(cfg.device, "diagnose.device")
    seconds: dict[str, float] = {}
    roles = dict(zip(ROLES, eval_splits, strict=True))
    full = {
        split: open_split(dataset_ref, split, stage=OBJECTS_STAGE)
        for split in dict.fromkeys(eval_splits)
    }
    datasets = {role: cap_objects(full[s], cfg.max_objects, rng) for role, s in roles.items()}
    bb = build_backbone(backbone, net.weights, input_size=net.input_size)
    part = object_diagnostics(
        datasets, bb, net.scope, cfg, costs, cv_folds, offset_scale, device, rng, seconds, solver,
        lowshot_k, lowshot_samples, bootstrap,
    )  # fmt: skip
    nets = ("original", "ceiling")
    plot_lowshot(paths.plot_file(LOWSHOT_PLOT), part["lowshot"]["settings"], nets)
    return {
        **provenance_keys(dataset_ref, bb, net.scope, eval_splits),
        "device": str(device),
        "n_objects": part["n_objects"],
        "n_objects_total": {r: sum(len(im.objects) for im in full[s]) for r, s in roles.items()},
        "original": part["original"],
        "ceiling": part["ceiling"],
        "headroom": part["headroom"],
        "lowshot": part["lowshot"],
        "context": part["context"],
        "class_gt": _num(part["class_gt"]),
        "n_gt_pairs": part["n_gt_pairs"],
        "phase_seconds": {k: round(v, 3) for k, v in seconds.items()},
        "skipped": {split: ds.policy.metrics() for split, ds in full.items()},
    }


def provenance_keys(dataset_ref: DatasetRef, bb, scope: str, eval_splits: tuple[str, str]) -> dict:
    """What the ground-truth part depends on, as both diagnose stages state it: the
    ``diagnose`` stage refuses ``diagnose_objects`` metrics whose keys differ."""
    return {
        "dataset": dataset_ref.name,
        "backbone": bb.name,
        "weights_sha256": bb.weights_sha256,
        "scope": scope,
        "input_size": bb.input_size,
        "classes": list(dataset_ref.classes),
        "splits": {"eval_train": eval_splits[0], "eval_test": eval_splits[1]},
    }


def read_object_diagnostics(path: Path, expected: dict) -> dict:
    """The metrics of stage ``diagnose_objects`` at ``path``, checked against ``expected``
    (:func:`provenance_keys`); a clear :class:`DataError` naming the file otherwise."""
    import json

    rerun = "rerun the diagnose_objects stage"
    path = require_file(path, "the ground-truth diagnosis", rerun, "missing_diagnose_objects")
    try:
        part = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(path, f"unreadable ({err})", "invalid") from None
    have = {key: part.get(key) for key in expected}
    check_same(path, have, expected, rerun, what="settings", kind="mismatch")
    return part


def run_diagnose(
    dataset_ref: DatasetRef,
    backbone: str,
    net: NetworkConfig,
    cfg: DiagnoseConfig,
    eval_splits: tuple[str, str],
    scn_split: str,
    paths: PathsConfig,
) -> dict:
    """DVC stage ``diagnose`` (module docstring): the proposal pairs of ``scn_split`` (fit)
    and of the test split of ``eval_splits`` (test) with their target caches, next to the
    ground-truth part read from stage ``diagnose_objects``'s metrics; writes the whole
    diagnosis (``metrics/details/diagnose.json``, the same keys either part computes) and
    its plot."""
    from pipeline.backbones import build_backbone

    rng = seed_everything(cfg.seed)
    device = resolve_device(cfg.device, "diagnose.device")
    seconds: dict[str, float] = {}

    # the inputs first: a missing one fails before any costly work
    pair_splits = list(dict.fromkeys([scn_split, eval_splits[1]]))
    for split in pair_splits:
        for f, what in ((paths.pairs_file(split), "pairs"), (paths.targets_file(split), "targets")):
            if not Path(f).is_file():
                raise DataError(f, f"{what} cache not found (run the {what} stage)",
                                f"missing_{what}")  # fmt: skip
    bb = build_backbone(backbone, net.weights, input_size=net.input_size)
    obj_part = read_object_diagnostics(
        paths.details_file(OBJECTS_STAGE), provenance_keys(dataset_ref, bb, net.scope, eval_splits)
    )
    full = {
        split: open_scn_split(dataset_ref, split, check_images=False, stage="diagnose")
        for split in pair_splits  # the SCN split: data.scn_images when set
    }
    classes = dataset_ref.classes
    n_classes = len(classes)
    original, ceiling, context = obj_part["original"], obj_part["ceiling"], obj_part["context"]

    # targets and quality on the proposal mechanism's pairs
    t = time.perf_counter()
    prop = {
        split: proposal_pairs(
            full[split], paths.pairs_file(split), paths.targets_file(split), bb, cfg, rng
        )
        for split in pair_splits
    }
    fit, test = prop[scn_split], prop[eval_splits[1]]
    oracle = (  # unknown on unannotated data.scn_images
        None
        if fit["top_label"] is None
        else class_mean_r2(
            fit["target"], fit["top_label"], test["target"], test["top_label"], n_classes + 1
        )
    )
    both_fit = np.concatenate([fit["h1"], fit["offset"]], axis=1)
    both_test = np.concatenate([test["h1"], test["offset"]], axis=1)
    inputs = {
        "ridge_h1_offset": (both_fit, both_test),
        "ridge_h1": (fit["h1"], test["h1"]),
        "ridge_offset": (fit["offset"], test["offset"]),
    }
    ridge, ridge_alpha, ridge_split = {}, {}, {}
    for key, (xf, xt) in inputs.items():
        # h1 alone reuses the penalty chosen for [h1, o] (same 1280 inputs but 8): one
        # costly cross-validation instead of two
        alphas = (ridge_alpha["ridge_h1_offset"],) if key == "ridge_h1" else cfg.ridge_alphas
        ridge[key], ridge_alpha[key] = ridge_r2(
            xf, fit["target"], xt, test["target"], alphas, groups=fit["image"]
        )
        if key == "ridge_h1_offset":  # the no-training baseline, split by overlap
            pred = ridge_predictions(xf, fit["target"], xt, (ridge_alpha[key],))[0]
            ridge_split[key] = split_explained(test["target"], pred, test["iou"])
    split: dict[str, dict[str, float]] = {"ridge_h1_offset": ridge_split["ridge_h1_offset"]}
    if fit["top_label"] is not None:
        means, _ = class_means(fit["target"], fit["top_label"], n_classes + 1)
        split["oracle_proposals"] = split_explained(
            test["target"], means[test["top_label"]], test["iou"]
        )
    # the context module on the frozen features: the most context teaches them today
    pred, context_epoch = fit_on_features(
        (fit["h1"], fit["offset"], fit["target"]),
        (test["h1"], test["offset"], test["target"]),
        hidden=cfg.context_hidden,
        epochs=cfg.context_epochs,
        lr=cfg.context_lr,
        seed=cfg.seed,
    )
    split["context_frozen"] = split_explained(test["target"], pred, test["iou"])
    seconds["proposal_pairs"] = time.perf_counter() - t
    targets = {
        "class_gt": obj_part["class_gt"],
        "oracle_proposals": _num(oracle),
        **{k: _num(v) for k, v in ridge.items()},
        "context_frozen": _num(split["context_frozen"]["all"]),
        "context_frozen_epoch": context_epoch,
        # each share on the test pairs whose patches overlap (IoU >= 0.05: a copy shortcut)
        # and on the others, where context is the only signal
        **{f"{k}_{sub}": _num(v[sub]) for k, v in split.items() for sub in SUBSETS},
        "test_share_overlapping": _num(split["ridge_h1_offset"]["share_overlap"]),
        "n_gt_pairs": obj_part["n_gt_pairs"],
        "n_proposal_pairs": {"fit": len(fit["target"]), "test": len(test["target"])},
        "ridge_alpha": ridge_alpha,
    }
    log.info("targets R^2: %s", {k: targets[k] for k in ("class_gt", "oracle_proposals",
                                                          *ridge)})  # fmt: skip

    shares = {
        "context accuracy": context["accuracy"],
        "context majority": context["majority_rate"],
        "R2 class (GT)": targets["class_gt"],
        "R2 oracle (proposals)": targets["oracle_proposals"],
        "R2 ridge [h1, o]": targets["ridge_h1_offset"],
        "R2 ridge [h1, o], no overlap": targets["ridge_h1_offset_nonoverlap"],
        "R2 context (frozen), no overlap": targets["context_frozen_nonoverlap"],
        "patches matching GT": test["quality"]["share_patches_matching"],
    }
    plot_diagnose(paths.plot_file(PLOT_NAME), classes, original, ceiling, shares)
    return {
        "device": str(device),
        "backbone": bb.name,
        "scope": net.scope,
        "input_size": bb.input_size,
        "classes": list(classes),
        "splits": {"eval_train": eval_splits[0], "eval_test": eval_splits[1], "scn": scn_split},
        "n_objects": obj_part["n_objects"],
        "n_objects_total": obj_part["n_objects_total"],
        "original": original,
        "ceiling": ceiling,
        "headroom": obj_part["headroom"],
        "lowshot": obj_part["lowshot"],
        "context": context,
        "targets": targets,
        "proposals": {s: prop[s]["quality"] for s in pair_splits if prop[s]["quality"]},
        "match_iou": cfg.match_iou,
        "low_iou": cfg.low_iou,
        "phase_seconds": {k: round(v, 3) for k, v in seconds.items()},
        "objects_phase_seconds": obj_part["phase_seconds"],
        # the eval splits as diagnose_objects counted them (it decodes every image)
        "skipped": {**{s: ds.policy.metrics() for s, ds in full.items()}, **obj_part["skipped"]},
    }
