"""The ``proposals`` and ``detect_proposals`` stages, and the proposal metrics.

``proposals`` mines the patches SCN trains on: the method named by the top-level
``proposal`` switch, on ``data.scn_split`` and ``data.eval_test_split``, into
``<paths.proposals>/<split>.h5``. ``detect_proposals`` mines the detector's RoIs with
``proposals.detect_method`` on ``data.eval_train_split`` and ``data.eval_test_split``
into ``<paths.proposals>/detect/<split>.h5``, independent of the ``proposal`` switch so
SCN experiments over that switch do not rerun it.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.config import ConfigError
from pipeline.data.images import manifest, open_scn_split, refuse_unannotated
from pipeline.data.voc import DatasetRef, VOCDataset, open_split
from pipeline.io import write_json
from pipeline.proposals import bbox, edgebox, random_crops, yolo
from pipeline.proposals.base import ProposalSet, ProposeFn
from pipeline.proposals.store import write_proposals
from pipeline.seed import seed_everything

if TYPE_CHECKING:
    from pipeline.proposals.config import ProposalsConfig

log = logging.getLogger(__name__)

#: The proposal methods by name: the choices of ``proposal`` and ``proposals.detect_method``.
PROPOSAL_METHODS: dict[str, ProposeFn] = {
    "edgebox": edgebox.propose,
    "yolo": yolo.propose,
    "bbox": bbox.propose,
    "random": random_crops.propose,
}
IOU_THRESHOLDS = (0.5, 0.7)


def get_method(name: str, key: str = "proposal") -> ProposeFn:
    """The method ``name``; a ConfigError naming ``key`` when there is none."""
    if name not in PROPOSAL_METHODS:
        raise ConfigError(
            f"{key}: {name!r} is not a proposal method; allowed: {', '.join(PROPOSAL_METHODS)}"
        )
    return PROPOSAL_METHODS[name]


# --------------------------------------------------------------------------- metrics


def recall_at(
    gt: list[np.ndarray], proposals: list[np.ndarray], thresholds=IOU_THRESHOLDS
) -> dict[float, float]:
    """Share of ground-truth boxes covered by a proposal with IoU >= t, for each t.

    ``gt[k]`` and ``proposals[k]`` are (G_k, 4) and (K_k, 4) boxes of image k;
    IoU by ``torchvision.ops.box_iou``. With no ground truth at all the recall is NaN.
    """
    import torch
    from torchvision.ops import box_iou

    best = []
    for g, p in zip(gt, proposals, strict=True):
        if len(g) == 0:
            continue
        if len(p) == 0:
            best.append(np.zeros(len(g)))
            continue
        iou = box_iou(
            torch.as_tensor(g, dtype=torch.float32), torch.as_tensor(p, dtype=torch.float32)
        )
        best.append(iou.max(dim=1).values.numpy())  # (G,) best IoU of each gt box
    if not best:
        return {t: float("nan") for t in thresholds}
    best_all = np.concatenate(best)
    return {t: float(np.mean(best_all >= t)) for t in thresholds}


def split_metrics(dataset: VOCDataset, props: ProposalSet) -> dict[str, Any]:
    """The metrics of one split (``metrics/proposals.json``); an unannotated split
    (``data.scn_images``) has no ``gt_boxes`` and no recall keys."""
    n = len(props)
    counts = [len(b) for b in props.boxes]
    policy = props.policy or dataset.policy
    truth: dict[str, Any] = {}
    if getattr(dataset, "annotated", True):
        gt = [dataset.by_id(i).boxes(include_difficult=False) for i in props.image_ids]
        recall = recall_at(gt, props.boxes)
        truth = {
            "gt_boxes": int(sum(len(g) for g in gt)),
            **{f"recall_iou{t}": round(r, 4) for t, r in recall.items()},
        }
    return {
        "method": props.provenance.get("method", ""),
        "images": n,
        "images_listed": len(dataset.ids_listed),
        "boxes": int(sum(counts)),
        "boxes_per_image": round(float(np.mean(counts)), 3) if n else 0.0,
        "images_without_boxes": int(sum(c == 0 for c in counts)),
        **truth,
        **policy.metrics(),
        "images_per_s": round(n / props.seconds, 2) if props.seconds > 0 else None,
    }


# --------------------------------------------------------------------------- stages


def unique_splits(*splits: str) -> list[str]:
    return list(dict.fromkeys(splits))


def mine(
    dataset_ref: DatasetRef,
    method: str,
    cfg: ProposalsConfig,
    splits: list[str],
    out_dir: Path,
    yolo_dir: Path,
    stage_name: str,
    method_key: str,
    provenance: dict[str, Any],
    scn_images: bool = False,
    manifest_file: Path | None = None,
) -> dict[str, Any]:
    """Run ``method`` on each split, write ``<out_dir>/<split>.h5``; return the metrics.

    ``yolo_dir``: the ``yolo`` stage's output, whose weights YOLO runs when
    ``proposals.yolo.weights`` is unset. ``provenance``: the params the stage depends on,
    recorded in each file (``pipeline.runner.stage_provenance``). ``scn_images``: the SCN
    split comes from ``data.scn_images`` when that is set (stage ``proposals``), described
    in ``manifest_file`` (when given) with its images' hashes.
    """
    propose = get_method(method, key=method_key)  # refuse an unknown method before any work
    seed_everything(cfg.seed)
    run_cfg = cfg
    if method == "yolo":
        yolo_cfg = replace(cfg.yolo, weights=yolo.resolve_weights(cfg.yolo, yolo_dir))
        run_cfg = replace(cfg, yolo=yolo_cfg)
    metrics: dict[str, Any] = {"method": method, "dataset": dataset_ref.name, "splits": {}}
    # Open (and check) every split before writing any: too many bad items in the last
    # split must not leave the first split's file behind.
    opener = open_scn_split if scn_images else open_split
    datasets = {split: opener(dataset_ref, split, stage=stage_name) for split in splits}
    for split, dataset in datasets.items():
        log.info(
            "%s: %s on %s/%s (%d images)", stage_name, method, dataset_ref.name, split,
            len(dataset),
        )  # fmt: skip
        props = propose(dataset, run_cfg, split)
        path = out_dir / f"{split}.h5"
        write_proposals(
            path,
            props,
            {
                "dataset": dataset_ref.name,
                "split": split,
                "scn_images": str(dataset.root) if not getattr(dataset, "annotated", True) else "",
                "created_by": stage_name,
                "params": provenance,
            },
        )
        m = split_metrics(dataset, props)
        log.info(
            "%s %s: %d images, %.1f boxes/image, recall@0.5 %s, @0.7 %s, %s images/s, skipped %d",
            stage_name,
            split,
            m["images"],
            m["boxes_per_image"],
            m.get("recall_iou0.5", "- (no annotations)"),
            m.get("recall_iou0.7", "-"),
            m["images_per_s"],
            m["skipped"],
        )
        metrics["splits"][split] = m
    if manifest_file is not None:
        write_json(manifest_file, manifest(dataset_ref, datasets.values()))
        metrics["scn_images"] = (
            None if dataset_ref.data.scn_images is None else str(dataset_ref.data.scn_images)
        )
    return metrics


def run_proposals(
    dataset_ref: DatasetRef,
    proposal: str,
    cfg: ProposalsConfig,
    splits: list[str],
    out_dir: Path,
    yolo_dir: Path,
    provenance: dict[str, Any],
    manifest_file: Path | None = None,
) -> dict[str, Any]:
    """Stage ``proposals``: the ``proposal`` method on ``splits`` (the SCN and held-out
    test splits) into ``<out_dir>/<split>.h5``; the SCN split from ``data.scn_images``
    when that is set, described with its images' hashes in ``manifest_file``
    (``PathsConfig.scn_images_manifest``; ``{"scn_images": null}`` when unset)."""
    get_method(proposal)
    refuse_unannotated(dataset_ref, proposal)
    return mine(
        dataset_ref, proposal, cfg, unique_splits(*splits), out_dir, yolo_dir, "proposals",
        "proposal", provenance, scn_images=True, manifest_file=manifest_file,
    )  # fmt: skip


def run_detect_proposals(
    dataset_ref: DatasetRef,
    cfg: ProposalsConfig,
    splits: list[str],
    out_dir: Path,
    yolo_dir: Path,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """Stage ``detect_proposals``: ``proposals.detect_method`` on ``splits`` (the detector's
    train and test splits) into ``<out_dir>/<split>.h5``.

    The per-image cap is ``proposals.detect_max_boxes`` whatever the method.
    """
    cap = cfg.detect_max_boxes
    cfg = replace(
        cfg,
        edgebox=replace(cfg.edgebox, max_boxes=cap),
        yolo=replace(cfg.yolo, max_det=cap),
    )
    return mine(
        dataset_ref, cfg.detect_method, cfg, unique_splits(*splits), out_dir, yolo_dir,
        "detect_proposals", "proposals.detect_method", provenance,
    )  # fmt: skip
