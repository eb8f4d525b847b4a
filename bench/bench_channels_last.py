"""Benchmark of the backbones' memory format (results in BENCHMARKS.md, "Backbone memory
format").

In one run, per backbone and torch thread count: inference images/s of the frozen
backbone (``Backbone.features`` as every stage calls it) with its weights contiguous
(NCHW, torch's default) and channels-last (NHWC, what :func:`build_backbone` returns),
and the largest absolute difference of their outputs. Inputs are NCHW in both cases.
Backbones other than ``efficientnet_lite0`` run with random weights (no download).
With ``--train``, also forward + backward of the whole network (every weight trainable,
BatchNorm frozen as the project trains it), images/s; with ``--roi-head``, forward +
backward of the Fast R-CNN RoI head (``Backbone.detection_parts``) on ``--rois`` RoIs of
its RoI size, milliseconds per step.

    python bench/bench_channels_last.py --size 96 --batch 64 --threads 1 2 --train --roi-head
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time

import torch

from pipeline.backbones import BACKBONES, build_backbone

log = logging.getLogger("bench_channels_last")


def images_per_s(fn, x: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    """Best-of-one timing after a warm-up call: (images/s, output of the warm-up)."""
    with torch.inference_mode():
        out = fn(x)
        start = time.perf_counter()
        for _ in range(repeats):
            fn(x)
    return repeats * len(x) / (time.perf_counter() - start), out


def step_seconds(module: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Seconds per forward + backward of ``module`` on ``x`` (eval mode: frozen BatchNorm,
    every weight trainable), after a warm-up step."""
    module.eval().requires_grad_(True)
    module(x).sum().backward()
    start = time.perf_counter()
    for _ in range(repeats):
        module.zero_grad(set_to_none=True)
        module(x).sum().backward()
    return (time.perf_counter() - start) / repeats


def contiguous_copy(bb):
    """A copy of ``bb`` whose weights are back in torch's default (contiguous) format."""
    other = copy.deepcopy(bb)
    other.model.to(memory_format=torch.contiguous_format)
    for stage in other.stages:
        stage.module.to(memory_format=torch.contiguous_format)
    return other


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "vgg19", "resnet50"])
    ap.add_argument("--size", type=int, default=96, help="input side (px)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--train", action="store_true", help="also forward + backward")
    ap.add_argument("--roi-head", action="store_true", help="also the detector's RoI head")
    ap.add_argument("--rois", type=int, default=32)
    ap.add_argument(
        "--roi-size", type=int, default=0, help="RoI side; 0: the backbone's own (detect: 7)"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    rows = []
    for name in args.backbones:
        if name not in BACKBONES:
            raise SystemExit(f"--backbones: {name!r} is unknown; allowed: {', '.join(BACKBONES)}")
        bb = build_backbone(name, pretrained=name == "efficientnet_lite0", input_size=args.size)
        plain = contiguous_copy(bb)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(args.batch, 3, args.size, args.size, generator=gen)  # (B, 3, S, S)
        for threads in args.threads:
            torch.set_num_threads(threads)
            nchw, ref = images_per_s(plain.features, x, args.repeats)
            nhwc, out = images_per_s(bb.features, x, args.repeats)
            row = {
                "backbone": name,
                "size": args.size,
                "batch": args.batch,
                "threads": threads,
                "contiguous_images_per_s": round(nchw, 1),
                "channels_last_images_per_s": round(nhwc, 1),
                "speedup": round(nhwc / nchw, 2),
                "max_abs_diff": float((out - ref).abs().max()),
                "output_scale": float(ref.abs().max()),  # the scale to judge max_abs_diff by
            }
            if args.train:
                seq = [torch.nn.Sequential(*[st.module for st in b.stages]) for b in (plain, bb)]
                sec = [step_seconds(copy.deepcopy(m), x, max(1, args.repeats // 2)) for m in seq]
                row["train_contiguous_images_per_s"] = round(len(x) / sec[0], 1)
                row["train_channels_last_images_per_s"] = round(len(x) / sec[1], 1)
                row["train_speedup"] = round(sec[0] / sec[1], 2)
            if args.roi_head:
                heads = [b.detection_parts() for b in (plain, bb)]
                body, _, own, _ = heads[1]
                roi_size = args.roi_size or own
                with torch.inference_mode():
                    channels = body(x[:1]).shape[1]
                rois = torch.randn(args.rois, channels, roi_size, roi_size, generator=gen)
                sec = [step_seconds(h[3], rois, args.repeats) for h in heads]
                row["roi_head_rois"] = f"{args.rois} x {roi_size}x{roi_size}"
                row["roi_head_contiguous_ms"] = round(1000 * sec[0], 1)
                row["roi_head_channels_last_ms"] = round(1000 * sec[1], 1)
            log.info("%s", row)
            rows.append(row)
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
