"""Benchmarks of the ``targets`` stage (results in BENCHMARKS.md, section Targets).

throughput: target caching (decode, crop, resize in workers + forward + HDF5 writes) vs
    the bare backbone forward on random tensors of the same batch size, same run; the
    bare rate is measured before and after the pipeline and averaged.
memory: peak RSS of the caching (main process + workers) at several dataset sizes, each
    in a fresh subprocess.

    python bench/bench_targets.py throughput --size 224 --images 24 --per-image 8
    python bench/bench_targets.py memory --size 128 --images 20 80
    python bench/bench_targets.py throughput --backbone vgg19 --random-weights --amp  # GPU
    python bench/bench_targets.py precision --size 96 --images 60 --per-image 15

precision: the same patches cached in float32 and with ``targets.amp`` (bfloat16 autocast on
    a CPU with AVX-512 BF16 / AMX, float16 on a GPU), one after the other in one run: the
    rate of each (pipeline and bare forward) and how far the reduced-precision features are
    from float32 (relative norm of the difference per patch: median, 95th percentile, max;
    and the cosine similarity).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image

from pipeline.backbones import build_backbone
from pipeline.devices import autocast_dtype
from pipeline.targets import cache

log = logging.getLogger("bench_targets")


def make_data(root: Path, n_images: int, per_image: int, seed: int = 0) -> tuple[Path, dict]:
    """Random 320x256 JPEGs and a pairs manifest of ``per_image`` random boxes each."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    files, boxes, index = {}, [], []
    w, h = 320, 256
    for k in range(n_images):
        base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
        files[f"{k:06d}"] = root / f"{k:06d}.jpg"
        img.save(files[f"{k:06d}"], quality=85)
        xy = rng.uniform(0, [w - 40, h - 40], (per_image, 2))
        wh = rng.uniform(24, 160, (per_image, 2))
        b = np.hstack([xy, np.minimum(xy + wh, [w, h])]).astype(np.float32)
        boxes.append(b)
        index += [k] * per_image
    pairs = root / "pairs.h5"
    with h5py.File(pairs, "w") as fh:
        fh.create_dataset(
            "image_ids", data=np.array(list(files), dtype=object), dtype=h5py.string_dtype("utf-8")
        )
        fh.create_dataset("image_sizes", data=np.tile([w, h], (n_images, 1)).astype(np.int32))
        fh.create_dataset("patches/image_index", data=np.array(index, np.int32))
        fh.create_dataset("patches/box", data=np.concatenate(boxes))
    return pairs, files


def bare_rate(bb, n: int, batch: int, device: torch.device, amp: bool) -> float:
    model = bb.model.to(device)
    x = torch.randn(batch, 3, bb.input_size, bb.input_size, device=device)  # (B, 3, S, S)
    dtype = autocast_dtype(device) if amp else None
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=dtype, enabled=dtype is not None),
    ):
        bb.features(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        steps = math.ceil(n / batch)
        for _ in range(steps):
            f = bb.features(x)  # (B, D)
            f.float().cpu()
        elapsed = time.perf_counter() - t0
    model.cpu()
    return steps * batch / elapsed


def throughput(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    bb = build_backbone(args.backbone, pretrained=not args.random_weights, input_size=args.size)
    device = cache.resolve_device(args.device)
    amp = args.amp and autocast_dtype(device) is not None
    with tempfile.TemporaryDirectory() as tmp:
        pairs, files = make_data(Path(tmp) / "data", args.images, args.per_image)
        patches = cache.read_patches(pairs)
        n = len(patches.boxes)
        bare1 = bare_rate(bb, n, args.batch, device, amp)
        m = cache.build_targets(
            patches,
            files,
            Path(tmp) / "out.h5",
            bb,
            scope=args.scope,
            dtype=args.dtype,
            batch_size=args.batch,
            workers=args.workers,
            device=args.device,
            amp=args.amp,
        )
        bare2 = bare_rate(bb, n, args.batch, device, amp)
    bare = (bare1 + bare2) / 2
    return {
        "backbone": args.backbone,
        "input_size": args.size,
        "patches": n,
        "batch": args.batch,
        "workers": args.workers,
        "scope": args.scope,
        "dtype": args.dtype,
        "amp": amp,
        "device": m["device"],
        "pipeline_patches_per_s": m["patches_per_s"],
        "bare_patches_per_s": round(bare, 2),
        "bare_before_after": [round(bare1, 2), round(bare2, 2)],
        "ratio": round(m["patches_per_s"] / bare, 3),
        "trunk_cache_bytes": m["trunk_cache_bytes"],
        "torch_threads": torch.get_num_threads(),
    }


def precision(args: argparse.Namespace) -> dict:
    """float32 against ``amp`` on the same patches: rates and the features' deviation."""
    torch.manual_seed(0)
    bb = build_backbone(args.backbone, pretrained=not args.random_weights, input_size=args.size)
    device = cache.resolve_device(args.device)
    dtype = autocast_dtype(device)
    if dtype is None:
        raise SystemExit(f"precision: {device} has no fast reduced precision to compare")
    out: dict = {"backbone": args.backbone, "input_size": args.size, "device": str(device),
                 "autocast": str(dtype).removeprefix("torch."), "batch": args.batch,
                 "workers": args.workers, "torch_threads": torch.get_num_threads()}  # fmt: skip
    feats = {}
    with tempfile.TemporaryDirectory() as tmp:
        pairs, files = make_data(Path(tmp) / "data", args.images, args.per_image)
        patches = cache.read_patches(pairs)
        n = len(patches.boxes)
        out["patches"] = n
        for name, amp in (("float32", False), ("amp", True)):
            bare1 = bare_rate(bb, n, args.batch, device, amp)
            m = cache.build_targets(
                patches, files, Path(tmp) / f"{name}.h5", bb, scope=args.scope,
                batch_size=args.batch, workers=args.workers, device=args.device, amp=amp,
            )  # fmt: skip
            bare2 = bare_rate(bb, n, args.batch, device, amp)
            with h5py.File(Path(tmp) / f"{name}.h5", "r") as fh:
                feats[name] = fh["features"][:].astype(np.float64)  # (N, D)
            out[name] = {
                "pipeline_patches_per_s": m["patches_per_s"],
                "bare_patches_per_s": round((bare1 + bare2) / 2, 2),
                "ratio": round(m["patches_per_s"] / ((bare1 + bare2) / 2), 3),
            }
    ref, low = feats["float32"], feats["amp"]
    rel = np.linalg.norm(low - ref, axis=1) / np.maximum(np.linalg.norm(ref, axis=1), 1e-12)
    cos = (low * ref).sum(1) / np.maximum(
        np.linalg.norm(low, axis=1) * np.linalg.norm(ref, axis=1), 1e-12
    )
    out["speedup_pipeline"] = round(
        out["amp"]["pipeline_patches_per_s"] / out["float32"]["pipeline_patches_per_s"], 3
    )
    out["speedup_bare"] = round(
        out["amp"]["bare_patches_per_s"] / out["float32"]["bare_patches_per_s"], 3
    )
    out["rel_diff"] = {"median": float(np.median(rel)), "p95": float(np.quantile(rel, 0.95)),
                       "max": float(rel.max())}  # fmt: skip
    out["cosine_min"] = float(cos.min())
    return out


def child(args: argparse.Namespace) -> dict:
    """One caching run; reports peak RSS of this process and of its (worker) children."""
    bb = build_backbone(args.backbone, pretrained=not args.random_weights, input_size=args.size)
    with tempfile.TemporaryDirectory() as tmp:
        pairs, files = make_data(Path(tmp) / "data", args.images[0], args.per_image)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        m = cache.build_targets(
            cache.read_patches(pairs),
            files,
            Path(tmp) / "out.h5",
            bb,
            scope=args.scope,
            dtype=args.dtype,
            batch_size=args.batch,
            workers=args.workers,
            device=args.device,
        )
    return {
        "images": args.images[0],
        "patches": m["patches"],
        "peak_rss_mb_main": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_mb_after_model_and_data": round(rss_before / 1024, 1),
        "peak_rss_mb_worker": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
        ),
        "patches_per_s": m["patches_per_s"],
    }


def memory(args: argparse.Namespace) -> list[dict]:
    out = []
    for n in args.images:
        cmd = [
            sys.executable,
            __file__,
            "child",
            "--images",
            str(n),
            "--size",
            str(args.size),
            "--per-image",
            str(args.per_image),
            "--batch",
            str(args.batch),
            "--workers",
            str(args.workers),
            "--backbone",
            args.backbone,
            "--scope",
            args.scope,
            "--dtype",
            args.dtype,
            "--device",
            args.device,
        ]
        if args.random_weights:
            cmd.append("--random-weights")
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("mode", choices=["throughput", "memory", "child", "precision"])
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--images", type=int, nargs="+", default=[24])
    p.add_argument("--per-image", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--scope", default="fc")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.mode == "throughput":
        args.images = args.images[0]
        result = throughput(args)
    elif args.mode == "precision":
        args.images = args.images[0]
        result = precision(args)
    elif args.mode == "memory":
        result = memory(args)
    else:
        result = child(args)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
