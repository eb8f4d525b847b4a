"""GPU benchmark in one command: caching, SCN training, classify SVMs, Fast R-CNN.

    python -m bench.gpu                          # on a CUDA machine, < 5 minutes
    python -m bench.gpu --out gpu.json --markdown
    python -m bench.gpu --only caching,train     # a subset of the sections
    python -m bench.gpu --device cpu --tiny      # CPU smoke test (seconds, not a benchmark)

Every section runs the pipeline's own code on random weights (``build_backbone(...,
pretrained=False)``: no download) and synthetic data of the real shapes:

caching  VGG-19 fc7 target caching at 224 px with ``pipeline.targets.cache.build_targets``
         (decode + crop in DataLoader workers, trunk + head forward, HDF5 writes of
         features and trunk cache), AMP off and on, next to the bare backbone forward on
         random tensors (``bench.bench_targets.bare_rate``). Unit: patches/s.
train    trunk-cache SCN training with ``pipeline.train.methods.scn.fit`` on a synthetic
         pairs manifest + target cache (pool5 (512, 7, 7) -> fc7 4096), AMP off and on;
         the first epoch is the warm-up, the rate is the last epoch's. Projected to the
         paper's 160K pairs x 200 epochs (the paper: about 10 hours).
svm      ``pipeline.evaluate.classify.svm.train_and_test`` (the classify protocol: per class, C by
         3-fold CV over the VISSL cost list, then the fit on all train rows) on random
         non-negative 5,000 x 4,096 features, 20 classes; classes are timed one by one
         until the section's time share is spent, and the total is projected to all.
frcnn    ``pipeline.evaluate.detect.fast_rcnn.train_fast_rcnn`` on ``build_detector(vgg19)``
         (body fine-tuned, 2 images x 128 RoIs, shorter side 600) over synthetic
         images and 2,000 random proposals each; iterations/s after warm-up iterations,
         projected to the Fast R-CNN schedule of 40K iterations.

With ``--device cuda`` (the default) and no visible CUDA GPU the script prints one line
saying so and exits 0 without measuring (2 with ``--require-gpu``). Each section is
bounded in size and in time (``--budget-s``, shared between the sections), so a full run
fits in 5 minutes on a current GPU. Writes one JSON (``--out``); ``--markdown`` prints a
table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

SECTIONS = ("caching", "train", "svm", "frcnn")
PAPER_PAIRS, PAPER_EPOCHS, PAPER_HOURS = 160_000, 200, 10.0
FRCNN_ITERATIONS = 40_000  # the Fast R-CNN VOC2007 schedule (DetectConfig default)
TIMM_VGG19_AMP_IMG_S = (2000, 3000)  # anchor: timm's inference tables, consumer GPUs
# share of --budget-s per section (the rest is start-up and model building)
SHARES = {"caching": 0.30, "train": 0.25, "svm": 0.20, "frcnn": 0.20}

log = logging.getLogger("bench.gpu")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Problem sizes of one run (``FULL`` on a GPU, ``TINY`` for the CPU smoke test)."""

    input_size: int
    cache_images: int
    cache_per_image: int
    cache_batch: int
    bare_batches: int
    train_patches: int
    train_pairs: int
    test_pairs: int
    train_batch: int
    train_epochs: int
    svm_train: int
    svm_test: int
    svm_dim: int
    svm_classes: int
    frcnn_images: int
    frcnn_image_size: tuple[int, int]  # (width, height) of the synthetic images
    frcnn_proposals: int
    frcnn_min_size: int
    frcnn_max_size: int
    frcnn_warmup: int
    frcnn_iterations: int


FULL = Sizes(
    input_size=224,
    cache_images=128,
    cache_per_image=16,
    cache_batch=128,
    bare_batches=16,
    train_patches=2048,
    train_pairs=32_768,
    test_pairs=2048,
    train_batch=64,
    train_epochs=2,
    svm_train=5000,
    svm_test=5000,
    svm_dim=4096,
    svm_classes=20,
    frcnn_images=8,
    frcnn_image_size=(500, 375),
    frcnn_proposals=2000,
    frcnn_min_size=600,
    frcnn_max_size=1000,
    frcnn_warmup=3,
    frcnn_iterations=30,
)
TINY = Sizes(
    input_size=32,
    cache_images=2,
    cache_per_image=4,
    cache_batch=4,
    bare_batches=1,
    train_patches=16,
    train_pairs=16,
    test_pairs=8,
    train_batch=8,
    train_epochs=2,
    svm_train=120,
    svm_test=60,
    svm_dim=32,
    svm_classes=2,
    frcnn_images=2,
    frcnn_image_size=(96, 64),
    frcnn_proposals=20,
    frcnn_min_size=64,
    frcnn_max_size=96,
    frcnn_warmup=1,
    frcnn_iterations=2,
)


class Clock:
    """Wall-clock timing that waits for the GPU (``torch.cuda.synchronize``)."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def now(self) -> float:
        self.sync()
        return time.perf_counter()


_BACKBONES: dict[tuple[str, int], Any] = {}


def backbone(name: str, input_size: int):
    """The backbone with random weights (no download), built once per (name, size)."""
    from pipeline.backbones import build_backbone

    key = (name, input_size)
    if key not in _BACKBONES:
        torch.manual_seed(0)
        _BACKBONES[key] = build_backbone(name, pretrained=False, input_size=input_size)
    return _BACKBONES[key]


# --------------------------------------------------------------------------- caching


def bench_caching(args, sizes: Sizes, device: torch.device, deadline: float) -> dict:
    from bench.bench_targets import bare_rate, make_data
    from pipeline.targets.cache import build_targets, read_patches

    bb = backbone(args.backbone, sizes.input_size)
    out: dict[str, Any] = {
        "backbone": bb.name,
        "input_size": sizes.input_size,
        "scope": "fc",
        "batch": sizes.cache_batch,
        "workers": args.workers,
        "compression": "gzip",
        "dtype": "float32",
        "anchor_timm_vgg19_amp_images_per_s": list(TIMM_VGG19_AMP_IMG_S),
        "runs": {},
    }
    amps = (False, True) if device.type == "cuda" else (False,)
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        pairs, files = make_data(Path(tmp) / "data", sizes.cache_images, sizes.cache_per_image)
        patches = read_patches(pairs)
        n = len(patches.boxes)
        out["patches"] = n
        for amp in amps:
            key = "amp" if amp else "fp32"
            if time.perf_counter() > deadline:
                out["runs"][key] = {"skipped": "time budget"}
                continue
            # the bare forward first: it also warms CUDA, cuDNN and the allocator up
            bare = bare_rate(bb, sizes.bare_batches * sizes.cache_batch, sizes.cache_batch,
                             device, amp)  # fmt: skip
            m = build_targets(
                patches, files, Path(tmp) / f"targets_{key}.h5", bb, scope="fc",
                batch_size=sizes.cache_batch, workers=args.workers, device=str(device), amp=amp,
            )  # fmt: skip
            out["runs"][key] = {
                "amp": amp,
                "pipeline_patches_per_s": m["patches_per_s"],
                "forward_patches_per_s": round(n / max(m["forward_seconds"], 1e-9), 2),
                "bare_patches_per_s": round(bare, 2),
                "pipeline_over_bare": round(m["patches_per_s"] / bare, 3),
                "pipeline_seconds": m["seconds"],
                "trunk_cache_bytes": m["trunk_cache_bytes"],
                "features_bytes": m["features_bytes"],
            }
    return out


# --------------------------------------------------------------------------- train


def synthetic_pairs(root: Path, sizes: Sizes, bb, seed: int = 0) -> dict[str, tuple[Path, Path]]:
    """A pairs manifest and a target cache (features + trunk) per split, random values of
    the real shapes: trunk (P, 512, 7, 7) pool5 rows and (P, 4096) fc7 targets for VGG-19."""
    from pipeline.pairs.manifest import PairManifest, write_manifest

    rng = np.random.default_rng(seed)
    trunk, _ = bb.split("fc")
    with torch.inference_mode():
        trunk_shape = tuple(trunk(torch.zeros(1, 3, bb.input_size, bb.input_size)).shape[1:])
    out = {}
    for split, m in (("train", sizes.train_pairs), ("test", sizes.test_pairs)):
        p = sizes.train_patches if split == "train" else max(2, sizes.train_patches // 4)
        per_image = 16
        n_images = -(-p // per_image)
        xy = rng.uniform(0, 300, (p, 2)).astype(np.float32)
        manifest = PairManifest(
            image_ids=[f"{k:06d}" for k in range(n_images)],
            image_sizes=np.tile([500, 375], (n_images, 1)).astype(np.int32),
            patch_image=(np.arange(p) // per_image).astype(np.int32),
            patch_box=np.hstack([xy, xy + 64]).astype(np.float32),
            top=rng.integers(0, p, m).astype(np.int64),
            bottom=rng.integers(0, p, m).astype(np.int64),
            offset=rng.uniform(-1, 1, (m, 8)).astype(np.float32),
            iou=np.zeros(m, dtype=np.float32),
        )
        pairs = write_manifest(root / f"pairs_{split}.h5", manifest, {"offset_scale": "image"})
        targets = root / f"targets_{split}.h5"
        with h5py.File(targets, "w") as fh:
            # non-negative like post-ReLU activations (pool5 and fc7 both follow a ReLU)
            fh["features"] = np.maximum(rng.standard_normal((p, bb.feature_dim), np.float32), 0)
            fh["trunk"] = np.maximum(rng.standard_normal((p, *trunk_shape), np.float32), 0)
            fh.attrs["backbone"] = bb.name
            fh.attrs["scope"] = "fc"
        out[split] = (pairs, targets)
    return out


def bench_train(args, sizes: Sizes, device: torch.device, deadline: float) -> dict:
    from pipeline.train.config import TrainConfig
    from pipeline.train.data import PairDataset
    from pipeline.train.methods.scn import fit
    from pipeline.train.model import build_scn

    bb = backbone(args.backbone, sizes.input_size)
    amps = (False, True) if device.type == "cuda" else (False,)
    out: dict[str, Any] = {
        "backbone": bb.name,
        "scope": "fc",
        "source": "trunk",
        "batch": sizes.train_batch,
        "epochs_run": sizes.train_epochs,
        "paper_pairs": PAPER_PAIRS,
        "paper_epochs": PAPER_EPOCHS,
        "paper_hours": PAPER_HOURS,
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        files = synthetic_pairs(Path(tmp), sizes, bb)
        for amp in amps:
            key = "amp" if amp else "fp32"
            if time.perf_counter() > deadline:
                out["runs"][key] = {"skipped": "time budget"}
                continue
            sets = [PairDataset(p, t, "trunk") for p, t in (files["train"], files["test"])]
            cfg = dataclasses.replace(
                TrainConfig(),
                epochs=sizes.train_epochs,
                batch_size=sizes.train_batch,
                lr=1e-7,  # random targets: speed only, a small lr keeps the loss finite
                device=str(device),
                amp=amp,
                workers=0,
                resume=False,
            )
            torch.manual_seed(0)
            model = build_scn(bb, "fc", sets[0].target_dim, cfg.hidden, cfg.use_offset)
            result = fit(model, *sets, cfg)
            for ds in sets:
                ds.close()
            last = result.history[-1]  # the first epoch is the warm-up
            pps = len(sets[0]) / max(last["seconds"], 1e-9)
            hours = PAPER_PAIRS * PAPER_EPOCHS / pps / 3600
            out["runs"][key] = {
                "amp": amp,
                "train_pairs": len(sets[0]),
                "test_pairs": len(sets[1]),
                "pairs_per_s": round(pps, 1),
                "pairs_per_s_all_epochs": round(result.pairs_per_s, 1),
                "epoch_seconds": [h["seconds"] for h in result.history],
                "train_loss": last["train_loss"],
                "projected_hours_160k_pairs_200_epochs": round(hours, 3),
                "projection": f"{PAPER_PAIRS} * {PAPER_EPOCHS} / {pps:.1f} pairs/s / 3600",
                "vs_paper_10h": round(hours / PAPER_HOURS, 4),
            }
            del model, result
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return out


# --------------------------------------------------------------------------- svm


def bench_svm(args, sizes: Sizes, device: torch.device, deadline: float) -> dict:
    from pipeline.evaluate.classify.svm import train_and_test
    from pipeline.evaluate.config import VISSL_COSTS

    rng = np.random.default_rng(0)
    n_cls = sizes.svm_classes

    def features(n: int) -> np.ndarray:
        return np.maximum(rng.standard_normal((n, sizes.svm_dim), np.float32), 0)  # fc7-like

    def labels(n: int) -> np.ndarray:
        y = np.where(rng.random((n, n_cls)) < 0.07, 1, -1)  # ~7% positives per class
        y[(y == -1) & (rng.random((n, n_cls)) < 0.01)] = 0  # a few "difficult"
        y[: 2 * n_cls] = -1
        y[np.arange(2 * n_cls), np.arange(2 * n_cls) % n_cls] = 1  # >= 2 positives each
        return y.astype(np.int8)

    xtr, xte = features(sizes.svm_train), features(sizes.svm_test)
    ytr, yte = labels(sizes.svm_train), labels(sizes.svm_test)
    # all CPUs on a GPU machine; one process for --tiny (joblib start-up would dominate)
    workers = args.svm_workers or (1 if args.tiny else os.cpu_count() or 1)
    per_class, warnings = [], 0
    for c in range(n_cls):
        if per_class and time.perf_counter() > deadline:
            break  # the budget guard: at least one class, then stop when the share is spent
        t0 = time.perf_counter()
        res = train_and_test(xtr, ytr[:, [c]], xte, yte[:, [c]], [f"class{c}"], VISSL_COSTS,
                             folds=3, seed=0, desc="svm bench", workers=workers,
                             solver="sklearn")  # fmt: skip
        per_class.append(time.perf_counter() - t0)
        warnings += res.convergence_warnings
    fits_per_class = len(VISSL_COSTS) * 3 + 1
    mean = float(np.mean(per_class))
    # the pipeline's default solver (classify.solver: newton): every class, fold and cost
    # in one batched exact Newton solve on ``device`` (the same problem as LinearSVC)
    t0 = time.perf_counter()
    newton = train_and_test(xtr, ytr, xte, yte, [f"class{c}" for c in range(n_cls)],
                            VISSL_COSTS, folds=3, seed=0, desc="svm bench newton",
                            solver="newton", device=device)  # fmt: skip
    newton_s = time.perf_counter() - t0
    return {
        "newton_device": str(device),
        "newton_seconds_all_classes": round(newton_s, 3),
        "newton_map": round(float(newton.map), 6) if newton.map is not None else None,
        "sklearn_vs_newton_ratio": round(mean * n_cls / max(newton_s, 1e-9), 2),
        "train_shape": [sizes.svm_train, sizes.svm_dim],
        "test_rows": sizes.svm_test,
        "classes": n_cls,
        "classes_timed": len(per_class),
        "costs": list(VISSL_COSTS),
        "folds": 3,
        "workers": workers,
        "linearsvc_fits_per_class": fits_per_class,
        "seconds_per_class": [round(s, 3) for s in per_class],
        "linearsvc_fits_per_s": round(fits_per_class / mean, 2),
        "projected_seconds_all_classes": round(mean * n_cls, 2),
        "convergence_warnings": warnings,
        "note": "sklearn (LinearSVC, the reference) per class on the CPU; newton: all "
        "classes at once on the device; random features and labels, so solver iterations "
        "may differ from real fc7 features",
    }


# --------------------------------------------------------------------------- frcnn


def bench_frcnn(args, sizes: Sizes, device: torch.device, deadline: float) -> dict:
    from pipeline.evaluate.config import DetectConfig
    from pipeline.evaluate.detect.fast_rcnn import DetectionImage, FeatureSource, train_fast_rcnn
    from pipeline.evaluate.detect.network import build_detector

    bb = backbone(args.backbone, sizes.input_size)
    rng = np.random.default_rng(0)
    w, h = sizes.frcnn_image_size
    pixels, images = [], []
    for k in range(sizes.frcnn_images):
        pixels.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))

        def boxes(n: int, lo: float) -> np.ndarray:
            xy = rng.uniform(0, [w * 0.6, h * 0.6], (n, 2))
            wh = rng.uniform(lo, 1.0, (n, 2)) * [w * 0.4, h * 0.4]
            return np.hstack([xy, xy + wh]).astype(np.float32)

        gt = boxes(3, 0.3)
        near = gt[rng.integers(0, 3, sizes.frcnn_proposals // 4)]  # foreground candidates
        jitter = rng.normal(0, 4, near.shape).astype(np.float32)
        props = np.vstack([near + jitter, boxes(sizes.frcnn_proposals - len(near), 0.05)])
        props = np.clip(props, 0, [w, h, w, h]).astype(np.float32)
        images.append(
            DetectionImage(
                id=f"{k:06d}", width=w, height=h, proposals=props, gt_boxes=gt,
                gt_labels=rng.integers(1, 21, 3).astype(np.int64),
                gt_difficult=np.zeros(3, dtype=bool),
            )
        )  # fmt: skip
    base = dataclasses.replace(
        DetectConfig(),
        lr=1e-4,  # random weights and boxes: speed only
        min_size=sizes.frcnn_min_size,
        max_size=sizes.frcnn_max_size,
        train_body=True,
        feature_cache_mb=0,
        device=str(device),
    )
    source = FeatureSource(images, lambda i: pixels[i], bb.mean, bb.std, base.min_size,
                           base.max_size, base.feature_cache_mb)  # fmt: skip
    model = build_detector(bb, 20, base)
    clock = Clock(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warm = dataclasses.replace(base, iterations=sizes.frcnn_warmup)
    train_fast_rcnn(model, source, warm, seed=0, device=device, desc="frcnn warm-up")
    chunk = max(1, sizes.frcnn_iterations // 5)
    done, seconds, losses = 0, 0.0, []
    while done < sizes.frcnn_iterations:
        if done and time.perf_counter() > deadline:
            break  # the budget guard: at least one chunk
        cfg = dataclasses.replace(base, iterations=min(chunk, sizes.frcnn_iterations - done))
        t0 = clock.now()
        hist = train_fast_rcnn(model, source, cfg, seed=done + 1, device=device, desc="frcnn")
        seconds += clock.now() - t0
        done += cfg.iterations
        losses += [r["loss"] for r in hist]
    its = done / max(seconds, 1e-9)
    hours = FRCNN_ITERATIONS / its / 3600
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "backbone": bb.name,
        "train_body": True,
        "images_per_batch": base.images_per_batch,
        "rois_per_image": base.rois_per_image,
        "min_size": base.min_size,
        "max_size": base.max_size,
        "image_size": [w, h],
        "proposals_per_image": sizes.frcnn_proposals,
        "warmup_iterations": sizes.frcnn_warmup,
        "iterations_timed": done,
        "seconds": round(seconds, 3),
        "iterations_per_s": round(its, 3),
        "last_loss": losses[-1] if losses else None,
        "projected_hours_40k_iterations": round(hours, 3),
        "projection": f"{FRCNN_ITERATIONS} / {its:.3f} it/s / 3600",
        "peak_gpu_memory_gib": round(peak, 2) if peak is not None else None,
    }


BENCHES: dict[str, Callable[..., dict]] = {
    "caching": bench_caching,
    "train": bench_train,
    "svm": bench_svm,
    "frcnn": bench_frcnn,
}


# --------------------------------------------------------------------------- report


def environment(device: torch.device) -> dict:
    from pipeline.provenance import code_version

    env = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "code_version": code_version(),
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        env["gpu_memory_gib"] = round(total / 2**30, 1)
    return env


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:,.1f}" if isinstance(v, float) else str(v)


def markdown(report: dict) -> str:
    """The table for BENCHMARKS.md."""
    env, sec = report["environment"], report["sections"]
    rows = [("section", "measure", "value")]
    c = sec.get("caching", {})
    for key, r in c.get("runs", {}).items():
        if "skipped" in r:
            rows.append(("caching", f"{key}: skipped", r["skipped"]))
            continue
        name = f"{c['backbone']} fc7 @ {c['input_size']} px, {key}"
        rows += [
            ("caching", f"{name}: pipeline patches/s", _fmt(r["pipeline_patches_per_s"])),
            ("caching", f"{name}: forward-only patches/s", _fmt(r["forward_patches_per_s"])),
            ("caching", f"{name}: bare forward patches/s", _fmt(r["bare_patches_per_s"])),
        ]
    t = sec.get("train", {})
    for key, r in t.get("runs", {}).items():
        if "skipped" in r:
            rows.append(("train", f"{key}: skipped", r["skipped"]))
            continue
        rows += [
            ("train", f"trunk-cache SCN ({t['backbone']} fc), {key}: pairs/s",
             _fmt(r["pairs_per_s"])),
            ("train", f"{key}: projected hours, 160K pairs x 200 epochs (paper: ~10 h)",
             f"{r['projected_hours_160k_pairs_200_epochs']:.2f}"),
        ]  # fmt: skip
    s = sec.get("svm", {})
    if s:
        rows += [
            ("svm", f"classify SVMs {s['train_shape'][0]} x {s['train_shape'][1]}: s/class "
             f"({s['classes_timed']} timed, {s['workers']} workers)",
             _fmt(float(np.mean(s["seconds_per_class"])))),
            ("svm", f"projected seconds, {s['classes']} classes (sklearn LinearSVC)",
             _fmt(s["projected_seconds_all_classes"])),
            ("svm", f"seconds, {s['classes']} classes, batched Newton on {s['newton_device']}",
             _fmt(s["newton_seconds_all_classes"])),
        ]  # fmt: skip
    f = sec.get("frcnn", {})
    if f:
        rows += [
            ("frcnn", f"Fast R-CNN {f['backbone']} (body trained, {f['min_size']} px, "
             f"{f['images_per_batch']} x {f['rois_per_image']} RoIs): iterations/s",
             f"{f['iterations_per_s']:.2f}"),
            ("frcnn", "projected hours, 40K iterations",
             f"{f['projected_hours_40k_iterations']:.2f}"),
        ]  # fmt: skip
    for name, r in sec.items():
        if "error" in r:
            rows.append((name, "error", r["error"]))
    cuda = f" (CUDA {env['cuda']})" if env["cuda"] else ""
    lines = [
        f"{env['device']}, torch {env['torch']}{cuda}, "
        f"{'--tiny ' if report['tiny'] else ''}{report['total_seconds']:.0f} s in all",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "| --- | --- | ---: |",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.gpu",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument(
        "--require-gpu", action="store_true", help="exit 2 (not 0) when --device cuda finds no GPU"
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="tiny sizes and few iterations: the CPU smoke test, not a benchmark",
    )
    p.add_argument("--out", type=Path, default=Path("bench_gpu.json"), help="the JSON report")
    p.add_argument("--markdown", action="store_true", help="print the table for BENCHMARKS.md")
    p.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections (default all): {','.join(SECTIONS)}",
    )
    p.add_argument("--backbone", default="vgg19", help="registry name, random weights")
    p.add_argument(
        "--budget-s",
        type=float,
        default=270.0,
        help="time budget of all sections together (seconds), shared by SHARES",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=min(8, max(1, (os.cpu_count() or 2) - 2)),
        help="DataLoader workers of the caching section",
    )
    p.add_argument("--svm-workers", type=int, default=0, help="SVM CV processes (0: all CPUs)")
    args = p.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad or not only:
        p.error(f"--only: unknown section(s) {bad}; allowed: {', '.join(SECTIONS)}")
    args.only = [s for s in SECTIONS if s in only]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "bench.gpu: no CUDA GPU is visible (torch.cuda.is_available() is False); nothing "
            "measured, no JSON written. Run on a GPU machine, or `python -m bench.gpu "
            "--device cpu --tiny` for the CPU smoke test."
        )
        return 2 if args.require_gpu else 0
    if device.type not in ("cuda", "cpu"):
        print(f"bench.gpu: --device {args.device!r}: allowed: cuda, cuda:N, cpu")
        return 2
    if device.type == "cuda":
        if device.index is None:  # "cuda": the current device, named by its index
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    sizes = TINY if args.tiny else FULL
    start = time.perf_counter()
    report: dict[str, Any] = {
        "schema": 1,
        "tiny": args.tiny,
        "note": "CPU --tiny run: a smoke check, not a benchmark" if args.tiny else "",
        "environment": environment(device),
        "budget_s": args.budget_s,
        "sizes": dataclasses.asdict(sizes),
        "sections": {},
    }
    for name in args.only:
        t0 = time.perf_counter()
        deadline = t0 + SHARES[name] * args.budget_s
        print(f"bench.gpu: {name} ...", flush=True)
        try:
            result = BENCHES[name](args, sizes, device, deadline)
        except Exception as err:  # one failing section must not lose the others
            log.exception("section %s failed", name)
            result = {"error": f"{type(err).__name__}: {err}"}
        result["seconds"] = round(time.perf_counter() - t0, 2)
        report["sections"][name] = result
        print(f"bench.gpu: {name} done in {result['seconds']:.1f} s", flush=True)
    report["total_seconds"] = round(time.perf_counter() - start, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"bench.gpu: wrote {args.out}")
    if args.markdown:
        print(markdown(report))
    return 1 if any("error" in r for r in report["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
