"""EdgeBoxes proposals (``proposal: edgebox``): OpenCV's EdgeBoxes on an edge map.

Images are processed by ``proposals.workers`` worker processes; each loads the edge
model once (pool initializer) and runs a fresh ``cv2.ximgproc.EdgeBoxes`` per image
(OpenCV's object carries state from one call to the next). Results come back in dataset
order, bit-identical for 1 or N workers. Filters (paper section 4.3): score <
``min_score``, long/short side ratio > ``max_aspect_ratio``, a side < ``min_size``; then
the ``max_boxes`` best are kept.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from tqdm import tqdm

from pipeline.data.voc import load_rgb
from pipeline.errors import DataError
from pipeline.proposals.base import ProposalSet, clip_boxes, filter_boxes
from pipeline.proposals.edges import hed_weights_path, make_edge_detector, sha256_cached

if TYPE_CHECKING:
    from pipeline.data.voc import VOCDataset
    from pipeline.proposals.config import EdgeBoxConfig, ProposalsConfig

log = logging.getLogger(__name__)

#: EdgeBoxes itself keeps this many times ``max_boxes`` before our side-length filter
#: (its NMS costs grow with the number of boxes it keeps).
INTERNAL_BOX_FACTOR = 5


def thresholds(cfg: EdgeBoxConfig) -> dict[str, Any]:
    """The EdgeBoxes thresholds recorded as provenance (every key but the edge source)."""
    keys = ("alpha", "beta", "min_score", "max_aspect_ratio", "min_size", "max_boxes")
    return {k: getattr(cfg, k) for k in keys}


def make_edgeboxes(s: EdgeBoxConfig):
    """A configured ``cv2.ximgproc.EdgeBoxes`` (checks the contrib build is the one loaded)."""
    if not hasattr(cv2, "ximgproc") or not hasattr(cv2.ximgproc, "createEdgeBoxes"):
        raise RuntimeError(
            "cv2.ximgproc.createEdgeBoxes is missing: opencv-python has overwritten "
            "opencv-contrib-python; reinstall the contrib package last (REFERENCE.md section 5)"
        )
    eb = cv2.ximgproc.createEdgeBoxes(
        alpha=s.alpha,
        beta=s.beta,
        minScore=s.min_score,
        maxAspectRatio=s.max_aspect_ratio,
        minBoxArea=float(s.min_size * s.min_size),
        maxBoxes=s.max_boxes * INTERNAL_BOX_FACTOR,
    )
    return eb


def bare_edgeboxes(eb, edges: np.ndarray, orientation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bare ``getBoundingBoxes`` call: ((K, 4) x, y, w, h, (K,) float32 scores)."""
    out = eb.getBoundingBoxes(edges, orientation)
    rects, scores = out if isinstance(out, tuple) else (out, np.ones(len(out)))
    rects = np.asarray(rects, dtype=np.float32).reshape(-1, 4)  # (K, 4) x, y, w, h
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)  # (K,)
    return rects, scores


def boxes_from_rects(rects: np.ndarray, width: int, height: int) -> np.ndarray:
    """(K, 4) OpenCV EdgeBoxes rects -> project (x1, y1, x2, y2), clipped to the image.

    OpenCV's EdgeBoxes returns Matlab-style 1-based corners ``Rect(x + 1, y + 1, w, h)``
    for a box covering 0-based pixels ``x .. x + w - 1``, hence the ``- 1``.
    """
    boxes = np.empty_like(rects, dtype=np.float32)  # (K, 4)
    boxes[:, 0] = rects[:, 0] - 1
    boxes[:, 1] = rects[:, 1] - 1
    boxes[:, 2] = rects[:, 0] - 1 + rects[:, 2]
    boxes[:, 3] = rects[:, 1] - 1 + rects[:, 3]
    return clip_boxes(boxes, width, height)


class EdgeBoxProposer:
    """Edge detector + EdgeBoxes + filters for one process."""

    def __init__(self, settings: EdgeBoxConfig, threads: int | None = None):
        self.settings = settings
        self.edges = make_edge_detector(settings.edge_source, settings.sed_model, threads=threads)
        make_edgeboxes(settings)  # fail early on an OpenCV without ximgproc

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB -> ((K, 4) float32 boxes, (K,) float32 scores), best first."""
        h, w = rgb.shape[:2]
        edges, orient = self.edges(rgb)
        # a fresh EdgeBoxes per image: OpenCV's keeps state between getBoundingBoxes calls
        # (scores of an image change with the image processed before it, opencv 4.12)
        rects, scores = bare_edgeboxes(make_edgeboxes(self.settings), edges, orient)
        s = self.settings
        return filter_boxes(
            boxes_from_rects(rects, w, h),
            scores,
            min_score=s.min_score,
            max_aspect_ratio=s.max_aspect_ratio,
            min_size=s.min_size,
            max_boxes=s.max_boxes,
        )


# --------------------------------------------------------------------------- workers

_WORKER: EdgeBoxProposer | None = None

Task = tuple[int, str, int, int]  # (index, image path, width, height)
Result = tuple[int, Any, Any, str | None, str | None]  # (index, boxes, scores, error, kind)


def _init_worker(settings: EdgeBoxConfig, threads: int) -> None:
    """Pool initializer: load the edge model once per worker process.

    OpenCV runs single-threaded in every worker (its results must not depend on the
    worker count); ``threads`` goes to torch (HED).
    """
    global _WORKER
    cv2.setNumThreads(1)
    _WORKER = EdgeBoxProposer(settings, threads=threads)


def _run_task(task: Task) -> Result:
    index, path, width, height = task
    assert _WORKER is not None, "worker not initialised"
    try:
        rgb = load_rgb(Path(path))
        if rgb.shape[0] != height or rgb.shape[1] != width:
            raise DataError(
                path,
                f"image is {rgb.shape[1]}x{rgb.shape[0]} but its annotation says {width}x{height}",
                kind="size_mismatch",
            )
        if min(width, height) < 2:
            raise DataError(
                path, f"image {width}x{height} is too small for edges", kind="empty_image"
            )
        try:
            boxes, scores = _WORKER(rgb)
        except cv2.error as err:
            raise DataError(
                path, f"edge detection / EdgeBoxes failed: {err}", kind="edgebox_error"
            ) from None
    except DataError as err:  # picklable summary; the parent applies its SkipPolicy
        return index, None, None, str(err.problem), err.kind
    return index, boxes, scores, None, None


def run_edgeboxes(
    tasks: list[Task], settings: EdgeBoxConfig, workers: int = 1, desc: str = "edgeboxes"
) -> Iterator[Result]:
    """Yield one :data:`Result` per task, in task order, using ``workers`` processes.

    One worker runs in this process; more run in a spawned pool (not forked: a forked
    child inherits OpenCV's / torch's thread pools in a broken state and can hang).
    Outputs are bit-identical for any worker count (``tests/test_proposals_edgebox.py``).
    """
    if not tasks:
        return
    workers = max(1, min(workers, len(tasks)))
    threads = max(1, (os.cpu_count() or 1) // workers)
    if workers == 1:
        global _WORKER
        previous = cv2.getNumThreads()
        _init_worker(settings, threads)
        try:
            yield from tqdm(map(_run_task, tasks), total=len(tasks), desc=desc, leave=False)
        finally:
            cv2.setNumThreads(previous)
            _WORKER = None
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(settings, threads)) as pool:
        it: Iterable[Result] = pool.imap(_run_task, tasks, chunksize=1)
        yield from tqdm(it, total=len(tasks), desc=desc, leave=False)


def edge_source_sha256(settings: EdgeBoxConfig) -> str:
    """Check the edge model is usable (before any worker starts); its weights' SHA-256."""
    if settings.edge_source == "hed":
        return sha256_cached(str(hed_weights_path()))
    return make_edge_detector(settings.edge_source, settings.sed_model, threads=1).weights_sha256


def propose(dataset: VOCDataset, cfg: ProposalsConfig, split: str) -> ProposalSet:
    """EdgeBoxes proposals for every image of ``dataset``; bad images skipped via its policy."""
    workers, cfg = cfg.workers, cfg.edgebox
    weights_sha256 = edge_source_sha256(cfg)  # a missing model fails before any work
    images = list(dataset)
    tasks = [(i, str(im.path), im.width, im.height) for i, im in enumerate(images)]
    kept, boxes, scores = [], [], []
    start = time.perf_counter()
    for index, b, s, problem, kind in run_edgeboxes(tasks, cfg, workers, desc=f"edgebox {split}"):
        if problem is not None:
            dataset.policy.handle(DataError(images[index].path, problem, kind=kind or "invalid"))
            continue
        kept.append(images[index])
        boxes.append(b)
        scores.append(s)
    seconds = time.perf_counter() - start
    dataset.policy.check(len(dataset.ids_listed))
    provenance = {
        "method": "edgebox",
        "edge_source": cfg.edge_source,
        "thresholds": thresholds(cfg),
        "weights_sha256": weights_sha256,
    }
    return ProposalSet.from_images(kept, boxes, scores, provenance, dataset.policy, seconds)
