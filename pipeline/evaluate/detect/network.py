"""One network's Fast R-CNN evaluation, shared by stage ``detect_original`` (the original
backbone) and stage ``detect`` (the trained SCN bottom stream).

Both detectors are trained under the identical schedule and seed (same head
initialisation of the new layers, same image order, flips and RoI samples: everything
is seeded from ``detect.seed`` when the detector is built, whichever stage builds it) on
``data.eval_train_split`` and tested on ``data.eval_test_split`` with the EdgeBoxes
proposals of the ``detect_proposals`` stage (``<paths.proposals>/detect/<split>.h5``).
VOC detection AP (IoU > 0.5, difficult ignored), area and 11-point, per class and mean.

With ``detect.seeds`` = N > 1 each network gets N detectors, trained with the seeds
``detect.seed + k`` (k = 0 .. N-1; the frozen body's feature maps computed once for all),
so what retraining the detector changes enters the comparison
(:func:`evaluate_seeds`); detector k's outputs are named :func:`run_name` (``original``,
``original_seed1``, ...), and a network's result holds the mean over its detectors.

Files (both stages): ``detections.h5`` (per network and detector, CSR over the test images:
``<net>/boxes`` (N, 4) in the original frame, ``<net>/scores`` (N,), ``<net>/labels`` (N,)
class indices, ``<net>/offsets`` (n_images + 1,); ``image_ids``; attrs ``classes``,
``created_by``, ``code_version``, ``params``), ``history.csv`` (per-iteration losses, a
``network`` column first).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
import torch
from torch import nn

from pipeline.config import ConfigError
from pipeline.data.voc import DatasetRef, VOCDataset, open_split
from pipeline.devices import resolve_device
from pipeline.errors import DataError
from pipeline.evaluate.config import DetectConfig
from pipeline.evaluate.detect.detection_ap import GroundTruth, evaluate_detections
from pipeline.evaluate.detect.fast_rcnn import (
    DetectionImage,
    FastRCNN,
    FeatureSource,
    detect,
    train_fast_rcnn,
)
from pipeline.io import atomic_path, write_figure
from pipeline.provenance import code_version
from pipeline.seed import seed_everything

if TYPE_CHECKING:
    from pipeline.artifacts import PathsConfig

log = logging.getLogger(__name__)

PLOT_NAME = "detect_examples.png"
DETECTIONS = "detections.h5"
HISTORY = "history.csv"

#: One image's detections: boxes (K, 4), scores (K,), class indices (K,).
Detections = list[tuple[np.ndarray, np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------- inputs


def read_detect_proposals(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray, tuple[int, int]]]:
    """image id -> (boxes (K, 4), scores (K,), (width, height)) from a proposals file."""
    from pipeline.proposals.store import read_proposals

    props = read_proposals(path)
    return {
        image_id: (np.asarray(b, np.float32).reshape(-1, 4), np.asarray(s, np.float32), (w, h))
        for image_id, b, s, (w, h) in zip(
            props.image_ids, props.boxes, props.scores, props.image_sizes.tolist(), strict=True
        )
    }


def detection_images(
    ds: VOCDataset, proposals_path: Path, max_proposals: int, training: bool
) -> tuple[list[DetectionImage], int]:
    """The dataset's images joined with their proposals (by image id).

    Proposals are checked against the annotated image size (a file made for other images
    or another resize is refused). Images without a proposals entry keep an empty list
    (counted: at test their objects are simply missed). ``training`` drops difficult
    ground truth (py-faster-rcnn ``use_diff=False``). Returns (images, n_without_proposals).
    """
    table = read_detect_proposals(proposals_path)
    class_index = {name: k for k, name in enumerate(ds.classes)}
    out, missing = [], 0
    for im in ds:
        boxes, scores, size = table.get(im.id, (np.zeros((0, 4), np.float32), None, None))
        if size is None:
            missing += 1
        elif tuple(size) != (im.width, im.height):
            raise DataError(
                proposals_path,
                f"image {im.id}: proposals were made for a {size[0]}x{size[1]} image, the "
                f"annotation says {im.width}x{im.height}; rerun the detect_proposals stage",
                kind="stale_proposals",
            )
        if scores is not None and len(boxes) > max_proposals:
            boxes = boxes[np.argsort(-scores, kind="mergesort")[:max_proposals]]
        objs = [o for o in im.objects if not (training and o.difficult)]
        out.append(
            DetectionImage(
                id=im.id,
                width=im.width,
                height=im.height,
                proposals=np.ascontiguousarray(boxes, dtype=np.float32),
                gt_boxes=np.array([o.box for o in objs], np.float32).reshape(-1, 4),
                gt_labels=np.array([class_index[o.name] + 1 for o in objs], np.int64),
                gt_difficult=np.array([o.difficult for o in objs], bool),
            )
        )
    if missing:
        log.warning("%s: %d of %d images have no proposals", proposals_path, missing, len(ds))
    return out, missing


def build_detector(
    backbone, num_classes: int, cfg: DetectConfig, seed: int | None = None
) -> FastRCNN:
    """Fast R-CNN on ``backbone.detection_parts()``; new layers initialised from ``seed``
    (default ``cfg.seed``).

    ``cfg.roi_size`` (when > 0) overrides the backbone's RoI size; ``cfg.frozen_head_layers``
    freezes that many leading children of the RoI head (an ``nn.Sequential``).
    """
    body, stride, roi_size, roi_head = backbone.detection_parts()
    body.requires_grad_(cfg.train_body)
    roi_head.requires_grad_(True)
    if cfg.frozen_head_layers:
        layers = list(roi_head.children()) if isinstance(roi_head, nn.Sequential) else []
        if cfg.frozen_head_layers >= len(layers):
            raise ConfigError(
                f"detect.frozen_head_layers: {cfg.frozen_head_layers} leaves nothing to train; "
                f"allowed: < {len(layers)} (the RoI head of {backbone.name} has "
                f"{len(layers)} layers)"
            )
        for layer in layers[: cfg.frozen_head_layers]:
            layer.requires_grad_(False)
    torch.manual_seed(cfg.seed if seed is None else seed)  # same init for both networks
    return FastRCNN(
        body, stride, cfg.roi_size or roi_size, roi_head, backbone.feature_dim, num_classes,
        roi_op=cfg.roi_op, train_body=cfg.train_body,
    )  # fmt: skip


# --------------------------------------------------------------------------- outputs


def nan_to_none(value):
    """NaN -> None, recursively (JSON metrics)."""
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [nan_to_none(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_detections(
    path: Path,
    image_ids: Sequence[str],
    detections: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]],
    classes: Sequence[str],
    params_json: str,
    created_by: str = "detect",
) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.create_dataset(
            "image_ids", data=np.array(list(image_ids), dtype=object),
            dtype=h5py.string_dtype("utf-8"),
        )  # fmt: skip
        for net, dets in detections.items():
            g = fh.create_group(net)
            counts = [len(s) for _, s, _ in dets]
            g.create_dataset(
                "offsets", data=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            )
            g.create_dataset("boxes", data=np.concatenate([b for b, _, _ in dets]).reshape(-1, 4))
            g.create_dataset("scores", data=np.concatenate([s for _, s, _ in dets]))
            g.create_dataset("labels", data=np.concatenate([lab for _, _, lab in dets]))
        fh.attrs["classes"] = json.dumps(list(classes))
        fh.attrs["created_by"] = created_by
        fh.attrs["code_version"] = code_version()
        fh.attrs["params"] = params_json


def read_detections(path: Path, network: str) -> tuple[list[str], Detections]:
    """(image ids, per-image detections of ``network``) from a :func:`write_detections`
    file."""
    with h5py.File(path, "r") as fh:
        ids = [v.decode() if isinstance(v, bytes) else str(v) for v in fh["image_ids"][()]]
        g = fh[network]
        off, boxes = g["offsets"][()], g["boxes"][()]
        scores, labels = g["scores"][()], g["labels"][()]
    dets = [
        (boxes[a:b], scores[a:b], labels[a:b])
        for a, b in zip(off[:-1].tolist(), off[1:].tolist(), strict=True)
    ]
    return ids, dets


def read_history(path: Path) -> dict[str, list[dict]]:
    """network -> its rows (without the ``network`` column) of a :func:`write_history`
    file; values as written (strings), so writing them again gives the same text."""
    out: dict[str, list[dict]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row.pop("network"), []).append(row)
    return out


def write_history(path: Path, histories: dict[str, list[dict]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = None
        for net, hist in histories.items():
            for row in hist:
                row = {"network": net, **row}
                if writer is None:
                    writer = csv.DictWriter(fh, fieldnames=list(row))
                    writer.writeheader()
                writer.writerow(row)


def plot_examples(
    path: Path,
    ds: VOCDataset,
    images: Sequence[DetectionImage],
    detections: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]],
    classes: Sequence[str],
    n: int,
    top: int = 8,
) -> None:
    """Rows: a few test images; columns: ground truth, then each network's ``top``
    highest-scoring detections (after NMS), labelled with class and score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = min(n, len(images))
    if n == 0:
        return
    cols = ["ground truth", *detections]
    fig, axes = plt.subplots(n, len(cols), figsize=(3.2 * len(cols), 3.2 * n), squeeze=False)
    for r in range(n):
        pixels = ds.load_image(ds.by_id(images[r].id))
        for c, col in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(pixels)
            ax.set_axis_off()
            if r == 0:
                ax.set_title(col if c == 0 else f"{col}: top {top} detections", fontsize=9)
            if col == "ground truth":
                items = [
                    (b, None, lab - 1)
                    for b, lab in zip(images[r].gt_boxes, images[r].gt_labels, strict=True)
                ]
                colour = "lime"
            else:
                boxes, scores, labels = detections[col][r]
                order = np.argsort(-scores, kind="mergesort")[:top]
                items = [(boxes[k], float(scores[k]), labels[k]) for k in order]
                colour = "red"
            for box, score, lab in items:
                x1, y1, x2, y2 = (float(v) for v in box)
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=colour, lw=1.5))
                text = classes[int(lab)] + ("" if score is None else f" {score:.2f}")
                ax.text(x1, y1, text, fontsize=6, color="white", va="bottom",
                        bbox={"facecolor": colour, "alpha": 0.6, "pad": 1, "lw": 0})  # fmt: skip
    fig.tight_layout()
    write_figure(fig, path, dpi=100)


# --------------------------------------------------------------------------- one network


@dataclass
class DetectInputs:
    """The (train, test) splits joined with their ``detect_proposals`` RoIs."""

    train_ds: VOCDataset
    test_ds: VOCDataset
    train_images: list[DetectionImage]
    test_images: list[DetectionImage]
    missing: dict[str, int]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.train_ds.classes)

    def metrics(self, device: torch.device) -> dict:
        """What the stage's metrics say about the inputs (the same in both stages)."""
        return {
            "device": str(device),
            "classes": list(self.classes),
            "n_train_images": len(self.train_images),
            "n_test_images": len(self.test_images),
            "images_without_proposals": dict(self.missing),
            "proposals_per_test_image": float(
                np.mean([len(im.proposals) for im in self.test_images])
            ),
            "skipped": {
                "train": self.train_ds.policy.metrics(),
                "test": self.test_ds.policy.metrics(),
            },
        }


def detect_inputs(
    dataset_ref: DatasetRef,
    cfg: DetectConfig,
    splits: tuple[str, str],
    paths: PathsConfig,
    stage: str,
) -> DetectInputs:
    split_train, split_test = splits
    train_ds = open_split(dataset_ref, split_train, check_images=False, stage=stage)
    test_ds = open_split(dataset_ref, split_test, check_images=False, stage=stage)
    train_images, train_missing = detection_images(
        train_ds, paths.detect_proposals_file(split_train), cfg.max_proposals, training=True
    )
    test_images, test_missing = detection_images(
        test_ds, paths.detect_proposals_file(split_test), cfg.max_proposals, training=False
    )
    return DetectInputs(
        train_ds, test_ds, train_images, test_images, {"train": train_missing, "test": test_missing}
    )


def setup(cfg: DetectConfig) -> torch.device:
    """Seed, device and threads, as every detection stage starts."""
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device, "detect.device")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    return device


def detector_seeds(cfg: DetectConfig) -> list[int]:
    """The seeds of the ``detect.seeds`` detectors of a network: seed, seed + 1, ..."""
    return [cfg.seed + k for k in range(cfg.seeds)]


def run_name(network: str, k: int) -> str:
    """The name of detector k's outputs (HDF5 group, history rows): ``network`` for the
    first, ``<network>_seed<k>`` for the others."""
    return network if k == 0 else f"{network}_seed{k}"


def feature_sources(bb, inputs: DetectInputs, cfg: DetectConfig) -> tuple[FeatureSource, ...]:
    """(train, test) feature sources of backbone ``bb``: with a frozen body its feature
    maps are cached there, so detectors trained one after the other compute them once."""

    def source(ds, images):
        return FeatureSource(
            images, lambda i: ds.load_image(ds.by_id(images[i].id)), bb.mean, bb.std,
            cfg.min_size, cfg.max_size, cfg.feature_cache_mb,
        )  # fmt: skip

    return source(inputs.train_ds, inputs.train_images), source(inputs.test_ds, inputs.test_images)


def evaluate_network(
    network: str,
    bb,
    inputs: DetectInputs,
    cfg: DetectConfig,
    device: torch.device,
    seed: int | None = None,
    sources: tuple[FeatureSource, FeatureSource] | None = None,
) -> tuple[dict, Detections, list[dict]]:
    """Train Fast R-CNN on backbone ``bb`` and test it: (result, detections, history).

    The detector's new layers, image order, flips and RoI samples are seeded from
    ``seed`` (default ``cfg.seed``) here, so the result does not depend on what ran before
    in the process. ``sources``: :func:`feature_sources` shared between calls.
    """
    seed = cfg.seed if seed is None else seed
    train_src, test_src = sources or feature_sources(bb, inputs, cfg)
    model = build_detector(bb, len(inputs.classes), cfg, seed)
    start = time.perf_counter()
    hist = train_fast_rcnn(model, train_src, cfg, seed, device, desc=f"train {network}")
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    dets = detect(
        model,
        test_src,
        cfg.score_thresh,
        cfg.nms,
        cfg.max_detections,
        device,
        desc=f"test {network}",
    )
    test_s = time.perf_counter() - start
    result = evaluate_detections(dets, test_ground_truth(inputs), inputs.classes)
    k = max(1, len(hist) // 10)
    result.update(
        {
            "train_seconds": round(train_s, 2),
            "test_seconds": round(test_s, 2),
            "loss_first": float(np.mean([h["loss"] for h in hist[:k]])),
            "loss_last": float(np.mean([h["loss"] for h in hist[-k:]])),
            "mean_fg_rois": float(np.mean([h["fg"] for h in hist])),
            "mean_rois": float(np.mean([h["rois"] for h in hist])),
        }
    )
    log.info(
        "%s: mAP %.4f (11-point %.4f), train %.0fs, test %.0fs",
        network, result["map"], result["map_11point"], train_s, test_s,
    )  # fmt: skip
    return result, dets, hist


@dataclass
class SeedRuns:
    """One network's ``detect.seeds`` detectors: the combined result (:func:`combine_results`)
    and, per detector k (seed ``detect.seed + k``), its result, detections and history."""

    result: dict
    results: list[dict]
    detections: list[Detections]
    histories: list[list[dict]]

    def named_histories(self, network: str) -> dict[str, list[dict]]:
        return {run_name(network, k): h for k, h in enumerate(self.histories)}

    def named_detections(self, network: str) -> dict[str, Detections]:
        return {run_name(network, k): d for k, d in enumerate(self.detections)}


def evaluate_seeds(
    network: str, bb, inputs: DetectInputs, cfg: DetectConfig, device: torch.device
) -> SeedRuns:
    """:func:`evaluate_network` once per seed of :func:`detector_seeds`, the feature
    sources (and a frozen body's cached feature maps) shared."""
    sources = feature_sources(bb, inputs, cfg)
    results, dets, hists = [], [], []
    for k, seed in enumerate(detector_seeds(cfg)):
        r, d, h = evaluate_network(run_name(network, k), bb, inputs, cfg, device, seed, sources)
        results.append(r)
        dets.append(d)
        hists.append(h)
    return SeedRuns(combine_results(results, detector_seeds(cfg)), results, dets, hists)


def combine_results(results: list[dict], seeds: list[int]) -> dict:
    """One network's result over its detectors: every AP, loss and RoI figure the mean
    over the detectors (a class's AP over those where it has one), seconds summed; plus
    ``detector_seeds``, ``map_per_seed`` and ``map_11point_per_seed``."""
    if len(results) != len(seeds) or not results:
        raise ValueError(f"{len(results)} results for seeds {seeds}")

    def mean(values: list) -> float:
        vals = [v for v in values if v is not None and not math.isnan(v)]
        return float(np.mean(vals)) if vals else float("nan")

    out = dict(results[0])
    if len(results) > 1:
        for key in ("map", "map_11point", "loss_first", "loss_last", "mean_fg_rois", "mean_rois"):
            out[key] = mean([r[key] for r in results])
        for key in ("train_seconds", "test_seconds"):
            out[key] = round(sum(r[key] for r in results), 2)
        out["per_class"] = {
            c: {
                **v,
                **{f: mean([r["per_class"][c][f] for r in results])
                   for f in ("ap", "ap_11point", "n_det", "recall")},
            }
            for c, v in results[0]["per_class"].items()
        }  # fmt: skip
    out["detector_seeds"] = list(seeds)
    out["map_per_seed"] = [r["map"] for r in results]
    out["map_11point_per_seed"] = [r["map_11point"] for r in results]
    return out


def test_ground_truth(inputs: DetectInputs) -> list[GroundTruth]:
    """The test images' ground truth as :func:`evaluate_detections` takes it."""
    return [
        GroundTruth.make(im.gt_boxes, im.gt_labels - 1, im.gt_difficult)
        for im in inputs.test_images
    ]


def differences(original: dict, trained: dict, classes: Sequence[str]) -> dict:
    """trained - original: ``map_diff``, ``map_11point_diff`` and per-class ``ap_diff``."""
    out: dict = {f"{key}_diff": trained[key] - original[key] for key in ("map", "map_11point")}
    out["ap_diff"] = {
        c: trained["per_class"][c]["ap"] - original["per_class"][c]["ap"] for c in classes
    }
    return out
