"""Benchmark of EdgeBoxes proposals (results in BENCHMARKS.md, section Proposals (EdgeBoxes)).

On the same generated scene images, in one run:
- bare: ``cv2.ximgproc.EdgeBoxes.getBoundingBoxes`` alone, on edge and orientation maps
  computed beforehand (one process, one OpenCV thread, as the pipeline calls it);
- pipeline with 1 and 2 workers: :func:`pipeline.proposals.edgebox.run_edgeboxes`, i.e.
  JPEG decode + edge map + NMS + EdgeBoxes + filters, worker start-up included.
Reports images/s of each and the ratio pipeline / bare.

    python bench/bench_edgebox.py --images 60 --size 256 --edge-source sobel
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.data.config import ScenesConfig
from pipeline.data.scenes import generate_scenes
from pipeline.data.voc import VOCDataset, load_rgb
from pipeline.proposals.config import EdgeBoxConfig
from pipeline.proposals.edgebox import (
    bare_edgeboxes,
    make_edgeboxes,
    run_edgeboxes,
)
from pipeline.proposals.edges import make_edge_detector

log = logging.getLogger("bench_edgebox")


def make_images(root: Path, n: int, size: int) -> list[tuple[int, str, int, int]]:
    """Generate ``n`` scene images of ``size`` px; return pipeline tasks for them."""
    cfg = ScenesConfig(n_train=n, n_val=0, n_test=1, image_size=size)
    generate_scenes(root, cfg)
    ds = VOCDataset(root / "VOCdevkit" / cfg.name, "train", cfg.classes)
    return [(i, str(im.path), im.width, im.height) for i, im in enumerate(ds)]


def bench_bare(tasks, settings: EdgeBoxConfig, repeats: int = 1) -> float:
    """Images/s of the bare getBoundingBoxes call (edges precomputed, not timed)."""
    detector = make_edge_detector(settings.edge_source, settings.sed_model)
    maps = [detector(load_rgb(Path(path))) for _, path, _, _ in tasks]
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for edges, orient in maps:
            bare_edgeboxes(make_edgeboxes(settings), edges, orient)
        best = max(best, len(maps) / (time.perf_counter() - start))
    return best


def bench_pipeline(tasks, settings: EdgeBoxConfig, workers: int) -> tuple[float, int, float]:
    """(images/s over the whole run, boxes, seconds to the first result: worker start-up)."""
    start = time.perf_counter()
    first = None
    n_boxes = 0
    for r in run_edgeboxes(tasks, settings, workers=workers):
        if first is None:
            first = time.perf_counter() - start
        n_boxes += len(r[1]) if r[1] is not None else 0
    return len(tasks) / (time.perf_counter() - start), n_boxes, first or 0.0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--size", type=int, default=256, help="scene image side (px)")
    ap.add_argument("--edge-source", default="sobel", choices=("sobel", "hed"))
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    settings = EdgeBoxConfig(edge_source=args.edge_source)
    with tempfile.TemporaryDirectory() as tmp:
        tasks = make_images(Path(tmp), args.images, args.size)
        log.info("%d images of %d px, edge source %s", len(tasks), args.size, args.edge_source)
        bare_before = bench_bare(tasks, settings)
        results, first = {}, {}
        for w in args.workers:
            ips, n_boxes, first[w] = bench_pipeline(tasks, settings, w)
            results[w] = ips
            log.info(
                "pipeline, %d worker(s): %.1f images/s (%.1f boxes/image), first result %.2f s",
                w,
                ips,
                n_boxes / len(tasks),
                first[w],
            )
        bare_after = bench_bare(tasks, settings)
    bare = float(np.mean([bare_before, bare_after]))
    report = {
        "images": len(tasks),
        "size": args.size,
        "edge_source": args.edge_source,
        "bare_getBoundingBoxes_images_per_s": round(bare, 1),
        **{f"pipeline_{w}w_images_per_s": round(v, 1) for w, v in results.items()},
        **{f"ratio_{w}w_to_bare": round(v / bare, 3) for w, v in results.items()},
        # the goal's measure: pipeline rate / (workers x bare rate)
        **{f"efficiency_{w}w": round(v / (w * bare), 3) for w, v in results.items()},
        **{f"first_result_{w}w_s": round(v, 3) for w, v in first.items()},
    }
    if 1 in results and 2 in results:
        report["speedup_2w_over_1w"] = round(results[2] / results[1], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
