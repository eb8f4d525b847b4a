"""Training throughput: the trunk cache vs full forward passes, on the same pairs, same run.

    .venv/bin/python bench/bench_train.py --images 12 --input-size 224

Generates a small scene dataset, pairs of its ground-truth boxes (every ordered pair of
an image) and their target cache with the project's own code, then trains one epoch of
the same SCN (same seed, same initial weights, same batches) twice: from the cached trunk
(``source=trunk``) and from the images (``source=image``: decode, crop, frozen trunk,
head). Reports pairs/s of each, the speed-up, and the losses of both runs, which must
agree (the cached trunk is the trunk the image path computes). Then one context-only
epoch (bottom stream frozen, as in the context warm-up and the frozen baseline) twice:
running the frozen head on the cached trunk, and reading h1 from the target cache
(``cached_h1_speedup``; the losses agree to float rounding).

It also reports the stability bound of SGD for the summed loss at initialisation:
the largest Hessian eigenvalue of the loss with respect to V2 is 2 * lambda_max(H2^T H2)
over a batch of h2 (B, hidden), and heavy-ball SGD is stable for lr < 2 (1 + momentum) /
lambda (see params.yaml ``train.lr``).

``--paper-scale`` times a few steps of ``vgg19`` scope ``fc`` on random cached tensors
of the real shapes (pool5 (512, 7, 7) -> fc7 4096) and projects 200 epochs over 160K
pairs (the paper reports about 10 hours); meant for a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.backbones import build_backbone
from pipeline.boxes import corner_offsets
from pipeline.config import build
from pipeline.data.config import ScenesConfig
from pipeline.data.scenes import generate_scenes
from pipeline.data.voc import open_split
from pipeline.pairs.manifest import write_manifest
from pipeline.params import Params
from pipeline.targets.cache import build_targets, read_patches
from pipeline.train.config import TrainConfig
from pipeline.train.data import PairDataset
from pipeline.train.loop import fit as fit_method
from pipeline.train.methods.scn import SCNMethod, fit
from pipeline.train.model import build_scn

log = logging.getLogger("bench_train")


def gt_pairs(params: Params, split: str, out: Path, max_per_image: int) -> Path:
    """Every ordered pair of ground-truth boxes of an image (at most ``max_per_image``)."""
    from pipeline.pairs.manifest import PairManifest

    ds = open_split(params.dataset_ref, split)
    ids, sizes, p_img, p_box, top, bottom, off = [], [], [], [], [], [], []
    for im in ds:
        boxes = im.boxes()
        if len(boxes) < 2:
            continue
        base = len(p_box)
        ids.append(im.id)
        sizes.append((im.width, im.height))
        p_img += [len(ids) - 1] * len(boxes)
        p_box += list(boxes)
        ij = [(i, j) for i in range(len(boxes)) for j in range(len(boxes)) if i != j]
        for i, j in ij[:max_per_image]:
            top.append(base + i)
            bottom.append(base + j)
            off.append(corner_offsets(boxes[[i]], boxes[[j]], im.width, im.height, "image")[0])
    manifest = PairManifest(
        image_ids=ids,
        image_sizes=np.array(sizes, dtype=np.int32),
        patch_image=np.array(p_img, dtype=np.int32),
        patch_box=np.array(p_box, dtype=np.float32),
        top=np.array(top, dtype=np.int64),
        bottom=np.array(bottom, dtype=np.int64),
        offset=np.array(off, dtype=np.float32),
        iou=np.zeros(len(top), dtype=np.float32),
    )
    return write_manifest(out, manifest, {"offset_scale": "image", "source_proposals": "bbox"})


def stability_bound(model, ds: PairDataset, batch: int, momentum: float) -> dict:
    """Largest Hessian eigenvalue of the summed loss w.r.t. V2 at init, and the lr bound."""
    model.eval()
    b = ds[np.arange(min(batch, len(ds)))]
    with torch.no_grad():
        h1 = model.bottom(b["x"], from_trunk=ds.source == "trunk")  # (B, D)
        pre = model.context.v1(h1)  # (B, hidden)
        if model.context.vloc is not None:
            pre = pre + model.context.vloc(b["offset"])  # (B, hidden)
        h2 = torch.sigmoid(pre)  # (B, hidden)
        lam = 2.0 * float(torch.linalg.eigvalsh(h2.T.double() @ h2.double()).max())
    return {
        "hessian_lambda_max_v2_sum": round(lam, 1),
        "lr_bound_sum": 2 * (1 + momentum) / lam,
        "lr_bound_mean": 2 * (1 + momentum) / (lam / len(h2)),
    }


def compare_sources(args) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench_train_"))
    scenes = ScenesConfig(n_train=args.images, n_val=0, n_test=4, image_size=256)
    generate_scenes(root / "scenes", scenes)
    params = build(
        Params,
        {
            "dataset": "scenes",
            "data": {"scenes_root": str(root / "scenes")},
            "scenes": {"n_train": args.images, "n_val": 0, "n_test": 4, "image_size": 256},
            "network": {"input_size": args.input_size, "scope": "fc"},
        },
    )
    bb = build_backbone(
        args.backbone, pretrained=args.backbone == "efficientnet_lite0", input_size=args.input_size
    )  # speed only: random init where no weights
    files = {}
    for split in ("train", "test"):
        pairs = gt_pairs(params, split, root / "pairs" / f"{split}.h5", args.pairs_per_image)
        ds = open_split(params.dataset_ref, split)
        images = {im.id: im.path for im in ds}
        targets = root / "targets" / f"{split}.h5"
        build_targets(read_patches(pairs), images, targets, bb, scope="fc", workers=0,
                      device="cpu", batch_size=32)  # fmt: skip
        files[split] = (pairs, targets, images)
    cfg = dataclasses.replace(
        TrainConfig(), epochs=1, batch_size=args.batch, lr=args.lr, device="cpu", hidden=1024
    )
    crop = (bb.input_size, bb.mean, bb.std)
    out: dict = {"backbone": args.backbone, "input_size": args.input_size,
                 "threads": torch.get_num_threads()}  # fmt: skip
    weights = {}
    for source in ("trunk", "image"):
        sets = [PairDataset(p, t, source, im, crop) for p, t, im in files.values()]
        torch.manual_seed(args.seed)
        model = build_scn(bb, "fc", sets[0].target_dim, cfg.hidden, cfg.use_offset)
        if source == "trunk":
            out.update(stability_bound(model, sets[0], 64, cfg.momentum))
        torch.manual_seed(args.seed)
        result = fit(model, *sets, dataclasses.replace(cfg, seed=args.seed))
        weights[source] = {k: v.clone() for k, v in model.state_dict().items()}
        out[source] = {
            "pairs": len(sets[0]),
            "pairs_per_s": round(result.pairs_per_s, 1),
            "train_loss": result.history[-1]["train_loss"],
            "test_loss": result.history[-1]["test_loss"],
            "seconds": round(result.train_seconds, 2),
        }
    # a context-only epoch (the context warm-up, the frozen baseline; issue 25 goal 2): the
    # bottom stream is frozen, so h1 is read from the target cache instead of running the
    # head on the cached trunk; the same epoch both ways, same seed and batches
    warm = dataclasses.replace(cfg, seed=args.seed, context_warmup_epochs=1)
    sets = [PairDataset(p, t, "trunk", im, crop) for p, t, im in files.values()]
    head_path = type("RunsTheHead", (SCNMethod,), {"cached_h1_exact": False})
    for name, method_cls in (("warmup_head", head_path), ("warmup_cached_h1", SCNMethod)):
        torch.manual_seed(args.seed)
        model = build_scn(bb, "fc", sets[0].target_dim, cfg.hidden, cfg.use_offset)
        result = fit_method(method_cls(model, *sets, warm), warm, quiet_warmup=True)
        out[name] = {
            "pairs_per_s": round(result.pairs_per_s, 1),
            "train_loss": result.history[-1]["train_loss"],
            "test_loss": result.history[-1]["test_loss"],
            "seconds": round(result.train_seconds, 2),
        }
    out["cached_h1_speedup"] = round(
        out["warmup_cached_h1"]["pairs_per_s"] / out["warmup_head"]["pairs_per_s"], 1
    )
    out["cached_h1_loss_rel_diff"] = abs(
        out["warmup_cached_h1"]["train_loss"] - out["warmup_head"]["train_loss"]
    ) / abs(out["warmup_head"]["train_loss"])
    out["speedup"] = round(out["trunk"]["pairs_per_s"] / out["image"]["pairs_per_s"], 1)
    out["max_weight_diff"] = max(
        float((weights["trunk"][k] - weights["image"][k]).abs().max()) for k in weights["trunk"]
    )
    out["loss_rel_diff"] = abs(out["trunk"]["train_loss"] - out["image"]["train_loss"]) / abs(
        out["image"]["train_loss"]
    )
    return out


def paper_scale(args) -> dict:
    """vgg19 fc on random pool5 rows: pairs/s and the projection to 200 epochs x 160K."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bb = build_backbone("vgg19", pretrained=False, input_size=224)
    torch.manual_seed(0)
    model = build_scn(bb, "fc", bb.feature_dim, hidden=1024).to(device).train()
    opt = torch.optim.SGD(model.trainable(), lr=1e-5, momentum=0.9, weight_decay=5e-4)
    b = args.batch
    x = torch.randn(b, 512, 7, 7, device=device)  # (B, 512, 7, 7) cached pool5
    offset = torch.rand(b, 8, device=device) * 2 - 1  # (B, 8)
    target = torch.rand(b, 4096, device=device)  # (B, 4096) cached fc7
    times = []
    for step in range(args.steps + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device.type, enabled=args.amp and device.type == "cuda"):
            h3 = model(x, offset, from_trunk=True)  # (B, 4096)
        loss = (h3.float() - target).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:  # warm-up steps excluded
            times.append(time.perf_counter() - t0)
    pps = b / float(np.median(times))
    return {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "pairs_per_s": round(pps, 1),
        "projected_hours_200_epochs_160k_pairs": round(200 * 160_000 / pps / 3600, 2),
        "amp": args.amp,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--pairs-per-image", type=int, default=20)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--paper-scale", action="store_true")
    parser.add_argument("--steps", type=int, default=5, help="timed steps for --paper-scale")
    parser.add_argument("--amp", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = paper_scale(args) if args.paper_scale else compare_sources(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
