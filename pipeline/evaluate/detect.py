"""Stage ``detect``: Fast R-CNN with the original backbone vs the SCN bottom stream.

Both detectors are trained under the identical schedule and seed (same head
initialisation of the new layers, same image order, flips and RoI samples) on
``data.eval_train_split`` and tested on ``data.eval_test_split`` with the EdgeBoxes
proposals of the ``detect_proposals`` stage (``<paths.proposals>/detect/<split>.h5``).
The only difference is the backbone: ``build_backbone(backbone, network.weights)`` vs
``load_trained(<paths.train>/model.pt).backbone``. VOC detection AP (IoU > 0.5,
difficult ignored), area and 11-point, per class and mean, and the SCN - original
differences go to ``metrics/detect.json``.

Outputs: ``<paths.detect>/detections.h5`` (per network, CSR over the test images:
``<net>/boxes`` (N, 4) in the original frame, ``<net>/scores`` (N,), ``<net>/labels`` (N,)
class indices, ``<net>/offsets`` (n_images + 1,); ``image_ids``; attrs ``classes``,
provenance), ``<paths.detect>/history.csv`` (per-iteration losses of both runs), and
``<paths.plots>/detect_examples.png`` (detections of both networks on a few test
images).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import torch
from torch import nn

from pipeline.config import ConfigError
from pipeline.data.voc import DatasetRef, VOCDataset, open_split
from pipeline.devices import resolve_device
from pipeline.errors import DataError
from pipeline.evaluate.config import DetectConfig
from pipeline.evaluate.detection_ap import GroundTruth, evaluate_detections
from pipeline.evaluate.fast_rcnn import (
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
    from pipeline.backbones.config import NetworkConfig

log = logging.getLogger(__name__)

NETWORKS = ("original", "scn")
PLOT_NAME = "detect_examples.png"


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


def build_detector(backbone, num_classes: int, cfg: DetectConfig) -> FastRCNN:
    """Fast R-CNN on ``backbone.detection_parts()``; new layers initialised from cfg.seed.

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
    torch.manual_seed(cfg.seed)  # identical classifier/regressor init for both networks
    return FastRCNN(
        body, stride, cfg.roi_size or roi_size, roi_head, backbone.feature_dim, num_classes,
        roi_op=cfg.roi_op, train_body=cfg.train_body,
    )  # fmt: skip


# --------------------------------------------------------------------------- outputs


def _clean(value):
    """NaN -> None, recursively (JSON metrics)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_detections(
    path: Path,
    image_ids: Sequence[str],
    detections: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]],
    classes: Sequence[str],
    params_json: str,
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
        fh.attrs["created_by"] = "detect"
        fh.attrs["code_version"] = code_version()
        fh.attrs["params"] = params_json


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


# --------------------------------------------------------------------------- stage


def run_detect(
    dataset_ref: DatasetRef,
    backbone: str,
    net: NetworkConfig,
    cfg: DetectConfig,
    splits: tuple[str, str],
    paths: PathsConfig,
    provenance: dict[str, Any],
    backbones: dict[str, object] | None = None,
) -> dict:
    """DVC stage ``detect``: train Fast R-CNN on ``splits[0]`` and test it on ``splits[1]``
    for the original network and the trained bottom stream, over the ``detect_proposals``
    RoIs; return the metrics.

    ``backbones`` (name -> Backbone) replaces the default pair (original, scn), for tests.
    """
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device, "detect.device")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    split_train, split_test = splits
    train_ds = open_split(dataset_ref, split_train, check_images=False, stage="detect")
    test_ds = open_split(dataset_ref, split_test, check_images=False, stage="detect")
    classes = train_ds.classes
    train_images, train_missing = detection_images(
        train_ds, paths.detect_proposals_file(split_train), cfg.max_proposals, training=True
    )
    test_images, test_missing = detection_images(
        test_ds, paths.detect_proposals_file(split_test), cfg.max_proposals, training=False
    )
    if backbones is None:
        backbones = load_backbones(backbone, net, paths.model_file)
    first = next(iter(backbones.values()))

    def source(ds, images, bb):
        return FeatureSource(
            images, lambda i: ds.load_image(ds.by_id(images[i].id)), bb.mean, bb.std,
            cfg.min_size, cfg.max_size, cfg.feature_cache_mb,
        )  # fmt: skip

    # one source per split, shared by both runs: a frozen body identical in both (the SCN
    # scope inside the RoI head) has its feature maps computed once
    sources = {
        "train": source(train_ds, train_images, first),
        "test": source(test_ds, test_images, first),
    }
    gts = [GroundTruth.make(im.gt_boxes, im.gt_labels - 1, im.gt_difficult) for im in test_images]
    metrics: dict = {
        "device": str(device),
        "classes": list(classes),
        "n_train_images": len(train_images),
        "n_test_images": len(test_images),
        "images_without_proposals": {"train": train_missing, "test": test_missing},
        "proposals_per_test_image": float(np.mean([len(im.proposals) for im in test_images])),
        "skipped": {"train": train_ds.policy.metrics(), "test": test_ds.policy.metrics()},
    }
    detections, histories = {}, {}
    for net, bb in backbones.items():
        if (tuple(bb.mean), tuple(bb.std)) != (tuple(first.mean), tuple(first.std)):
            srcs = {
                "train": source(train_ds, train_images, bb),
                "test": source(test_ds, test_images, bb),
            }
        else:
            srcs = sources
        model = build_detector(bb, len(classes), cfg)
        start = time.perf_counter()
        histories[net] = train_fast_rcnn(
            model, srcs["train"], cfg, cfg.seed, device, desc=f"train {net}"
        )
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        detections[net] = detect(
            model,
            srcs["test"],
            cfg.score_thresh,
            cfg.nms,
            cfg.max_detections,
            device,
            desc=f"test {net}",
        )
        test_s = time.perf_counter() - start
        result = evaluate_detections(detections[net], gts, classes)
        hist = histories[net]
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
            net, result["map"], result["map_11point"], train_s, test_s,
        )  # fmt: skip
        metrics[net] = result
    if "original" in metrics and "scn" in metrics:
        for key in ("map", "map_11point"):
            a, b = metrics["original"][key], metrics["scn"][key]
            metrics[f"{key}_diff"] = b - a
        metrics["ap_diff"] = {
            c: metrics["scn"]["per_class"][c]["ap"] - metrics["original"]["per_class"][c]["ap"]
            for c in classes
        }
    out_dir = Path(paths.detect)
    params_json = json.dumps(provenance, sort_keys=True)
    write_detections(
        out_dir / "detections.h5", [im.id for im in test_images], detections, classes, params_json
    )
    write_history(out_dir / "history.csv", histories)
    plot_examples(
        paths.plot_file(PLOT_NAME),
        test_ds,
        test_images,
        detections,
        classes,
        cfg.n_examples,
    )
    return _clean(metrics)


def load_backbones(backbone: str, net: NetworkConfig, model_path: Path) -> dict[str, object]:
    """The original pretrained backbone and the trained SCN bottom stream as a backbone."""
    from pipeline.backbones import build_backbone
    from pipeline.train.model import load_trained

    original = build_backbone(backbone, net.weights, input_size=net.input_size)
    trained = load_trained(model_path)
    scn = trained.backbone
    if scn.name != original.name:
        raise DataError(
            model_path,
            f"trained on backbone {scn.name!r} but backbone is {original.name!r}; rerun train",
            kind="stale_model",
        )
    return {"original": original, "scn": scn}
