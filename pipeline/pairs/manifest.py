"""The ``pairs`` stage: (top i, bottom j, offset o_ij) triples from each image's proposals.

For the SCN training split (``data.scn_split``) and the held-out test split
(``data.eval_test_split``) it reads ``<paths.proposals>/<split>.h5`` and writes
``<paths.pairs>/<split>.h5`` (format in ``docs/artifacts.md``).

Per image:

1. The proposals are de-duplicated (identical boxes kept once, first occurrence, i.e.
   best score first); degenerate or non-finite boxes are dropped and counted.
   Images left with fewer than 2 patches are skipped and counted.
2. Candidate pairs: with ``pairs.ordered`` every ordered (i, j), i != j (both (i, j)
   and (j, i)); otherwise one of each unordered pair, (i, j) with i < j in the
   image's patch order, i.e. the better-scoring patch is the top (the target).
3. Kept when ``pairs.min_iou <= IoU(b_i, b_j) <= pairs.max_iou``.
4. At most ``pairs.max_pairs_per_image``, sampled without replacement from a generator
   seeded by ``pairs.seed`` and the image id (so an image samples the same pairs
   whatever else is in the split), then listed in (i, j) order.
5. ``pairs.symmetric`` then adds the swapped (j, i) of each pair not already present
   (up to twice the cap; the paper found this unhelpful, default off).

Offsets: ``o_ij = b_i - b_j`` over the 8 corner coordinates (x, y of top-left,
top-right, bottom-left, bottom-right), so a box ``(x1, y1, x2, y2)`` is the vector
``(x1, y1, x2, y1, x1, y2, x2, y2)``. ``pairs.offset_scale = image`` divides the x
differences by the image width and the y differences by its height (values in
[-1, 1]); ``none`` keeps pixels.

The patch table holds the patches used by at least one pair, and ``image_ids`` the
images contributing them; patch p's features are row p of every downstream array.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
from tqdm import tqdm

from pipeline.boxes import box_iou, corner_offsets
from pipeline.errors import DataError
from pipeline.io import atomic_path
from pipeline.pairs.overlap import overlapping
from pipeline.provenance import code_version, sha256_file

if TYPE_CHECKING:
    from pipeline.artifacts import PathsConfig
    from pipeline.pairs.config import PairsConfig
    from pipeline.proposals.base import ProposalSet

log = logging.getLogger(__name__)

LOW_IOU = 0.2  # metrics report the share of pairs overlapping less than this (paper: 92.6%)


def unique_boxes(boxes: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Valid, de-duplicated boxes in first-occurrence order; (boxes, n_duplicates, n_bad)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    ok = np.isfinite(b).all(axis=1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    n_bad = int((~ok).sum())
    b = b[ok]
    _, first = np.unique(b, axis=0, return_index=True)
    first = np.sort(first)
    return b[first], len(b) - len(first), n_bad


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """A generator for one image: same seed and id, same draws, on any machine."""
    return np.random.default_rng([seed, zlib.crc32(image_id.encode("utf-8"))])


def select_pairs(
    boxes: np.ndarray, cfg: PairsConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of one image's unique ``boxes`` (K, 4) under the policy of ``cfg``.

    Returns ``top`` (M,) int64, ``bottom`` (M,) int64 indices into ``boxes`` and their
    IoU (M,) float64, sorted by (top, bottom) (symmetric additions follow).
    """
    k = len(boxes)
    iou = box_iou(boxes, boxes)  # (K, K)
    ii, jj = np.nonzero(~np.eye(k, dtype=bool))  # all ordered pairs, row-major
    if not cfg.ordered:
        keep = ii < jj
        ii, jj = ii[keep], jj[keep]
    v = iou[ii, jj]
    keep = (v >= cfg.min_iou) & (v <= cfg.max_iou)
    ii, jj = ii[keep], jj[keep]
    if len(ii) > cfg.max_pairs_per_image:
        pick = np.sort(rng.choice(len(ii), size=cfg.max_pairs_per_image, replace=False))
        ii, jj = ii[pick], jj[pick]
    if cfg.symmetric and len(ii):
        have = set(zip(ii.tolist(), jj.tolist(), strict=True))
        extra = [
            (j, i) for i, j in zip(ii.tolist(), jj.tolist(), strict=True) if (j, i) not in have
        ]
        if extra:
            ei, ej = np.array(extra, dtype=np.int64).T
            ii, jj = np.concatenate([ii, ei]), np.concatenate([jj, ej])
    return ii.astype(np.int64), jj.astype(np.int64), iou[ii, jj]


# --------------------------------------------------------------------------- manifest


@dataclass
class PairManifest:
    """One split's pairs in the layout of ``data/pairs/<split>.h5``."""

    image_ids: list[str]
    image_sizes: np.ndarray  # (n_images, 2) int32 (width, height)
    patch_image: np.ndarray  # (P,) int32 into image_ids
    patch_box: np.ndarray  # (P, 4) float32
    top: np.ndarray  # (M,) int64 into patches
    bottom: np.ndarray  # (M,) int64 into patches
    offset: np.ndarray  # (M, 8) float32
    iou: np.ndarray  # (M,) float32, not stored: metrics only
    counts: dict[str, int] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        m = len(self.top)
        n = len(self.image_ids)
        return {
            "pairs": m,
            "patches": len(self.patch_box),
            "images": n,
            "pairs_per_image": round(m / n, 3) if n else 0.0,
            "share_iou_below_0.2": round(float(np.mean(self.iou < LOW_IOU)), 4) if m else 0.0,
            # pairs whose patches share pixels (pipeline.pairs.overlap): a copy shortcut
            "share_overlapping": round(float(np.mean(overlapping(self.iou))), 4) if m else 0.0,
            **self.counts,
        }


def build_manifest(proposals: ProposalSet, cfg: PairsConfig) -> PairManifest:
    """Pairs of every image of ``proposals`` (see the module docstring for the policy)."""
    ids, sizes, p_img, p_box, tops, bottoms, offs, ious = [], [], [], [], [], [], [], []
    counts = {
        "images_in": len(proposals),
        "images_skipped_lt2_patches": 0,
        "images_without_pairs": 0,
        "duplicate_boxes": 0,
        "degenerate_boxes": 0,
    }
    n_patches = 0
    for k, (image_id, boxes, _scores) in enumerate(
        tqdm(proposals, desc="pairs", unit="img", leave=False, total=len(proposals))
    ):
        ub, n_dup, n_bad = unique_boxes(boxes)
        counts["duplicate_boxes"] += n_dup
        counts["degenerate_boxes"] += n_bad
        if len(ub) < 2:
            counts["images_skipped_lt2_patches"] += 1
            continue
        width, height = (int(v) for v in proposals.image_sizes[k])
        top, bottom, iou = select_pairs(ub, cfg, image_rng(cfg.seed, image_id))
        if len(top) == 0:
            counts["images_without_pairs"] += 1
            continue
        used = np.unique(np.concatenate([top, bottom]))  # (U,) local patch indices in use
        remap = np.full(len(ub), -1, dtype=np.int64)
        remap[used] = np.arange(len(used)) + n_patches
        img_index = len(ids)
        ids.append(image_id)
        sizes.append((width, height))
        p_img.append(np.full(len(used), img_index, dtype=np.int32))
        p_box.append(ub[used])
        tops.append(remap[top])
        bottoms.append(remap[bottom])
        offs.append(corner_offsets(ub[top], ub[bottom], width, height, cfg.offset_scale))
        ious.append(iou.astype(np.float32))
        n_patches += len(used)
    return PairManifest(
        image_ids=ids,
        image_sizes=np.array(sizes, dtype=np.int32).reshape(-1, 2),
        patch_image=np.concatenate(p_img) if p_img else np.zeros(0, np.int32),
        patch_box=np.concatenate(p_box).astype(np.float32)
        if p_box
        else np.zeros((0, 4), np.float32),
        top=np.concatenate(tops) if tops else np.zeros(0, np.int64),
        bottom=np.concatenate(bottoms) if bottoms else np.zeros(0, np.int64),
        offset=np.concatenate(offs) if offs else np.zeros((0, 8), np.float32),
        iou=np.concatenate(ious) if ious else np.zeros(0, np.float32),
        counts=counts,
    )


def write_manifest(path: str | Path, manifest: PairManifest, attrs: dict[str, Any]) -> Path:
    """Write ``manifest`` to ``path`` atomically, with ``attrs`` as HDF5 attributes."""
    import json

    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as fh:
            fh.create_dataset(
                "image_ids",
                data=np.array(manifest.image_ids, dtype=object),
                dtype=h5py.string_dtype("utf-8"),
            )
            fh.create_dataset("image_sizes", data=manifest.image_sizes.astype(np.int32))  # (n, 2)
            fh.create_dataset(
                "patches/image_index", data=manifest.patch_image.astype(np.int32)
            )  # (P,)
            fh.create_dataset("patches/box", data=manifest.patch_box.astype(np.float32))  # (P, 4)
            fh.create_dataset("pairs/top", data=manifest.top.astype(np.int64))  # (M,)
            fh.create_dataset("pairs/bottom", data=manifest.bottom.astype(np.int64))  # (M,)
            fh.create_dataset("pairs/offset", data=manifest.offset.astype(np.float32))  # (M, 8)
            for key, value in attrs.items():
                fh.attrs[key] = (
                    json.dumps(value, sort_keys=True) if isinstance(value, dict) else value
                )
    log.info(
        "wrote %s: %d images, %d patches, %d pairs",
        path,
        len(manifest.image_ids),
        len(manifest.patch_box),
        len(manifest.top),
    )
    return path


def read_manifest(path: str | Path) -> PairManifest:
    """Read a pairs file back; :class:`DataError` naming the file when it is malformed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "pairs file not found", kind="missing_pairs")
    keys = (
        "image_ids",
        "image_sizes",
        "patches/image_index",
        "patches/box",
        "pairs/top",
        "pairs/bottom",
        "pairs/offset",
    )
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise DataError(path, f"not a readable HDF5 file: {err}", kind="corrupt_pairs") from None
    with fh:
        missing = [k for k in keys if k not in fh]
        if missing:
            raise DataError(
                path, f"missing datasets {missing}; expected {list(keys)}", kind="malformed_pairs"
            )
        ids = [s.decode() if isinstance(s, bytes) else str(s) for s in fh["image_ids"][:]]
        m = PairManifest(
            image_ids=ids,
            image_sizes=fh["image_sizes"][:],
            patch_image=fh["patches/image_index"][:],
            patch_box=fh["patches/box"][:],
            top=fh["pairs/top"][:],
            bottom=fh["pairs/bottom"][:],
            offset=fh["pairs/offset"][:],
            iou=np.zeros(0, np.float32),
        )
    n_p = len(m.patch_box)
    if m.offset.shape != (len(m.top), 8) or m.bottom.shape != m.top.shape:
        raise DataError(
            path,
            f"pairs arrays disagree: top {m.top.shape}, bottom {m.bottom.shape}, "
            f"offset {m.offset.shape}",
            kind="malformed_pairs",
        )
    if len(m.top) and (
        min(m.top.min(), m.bottom.min()) < 0 or max(m.top.max(), m.bottom.max()) >= n_p
    ):
        raise DataError(path, f"pair indices outside the {n_p} patches", kind="malformed_pairs")
    if len(m.patch_image) != n_p or (n_p and m.patch_image.max() >= len(ids)):
        raise DataError(
            path, "patches/image_index does not index image_ids", kind="malformed_pairs"
        )
    return m


def make_split(
    cfg: PairsConfig,
    proposal: str,
    dataset: str,
    split: str,
    proposals_file: Path,
    out_file: Path,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """Build the manifest of ``split`` from the ``proposal`` method's ``proposals_file``
    (of ``dataset``, unless the file names its own), write it to ``out_file``; return its
    metrics."""
    from pipeline.proposals.store import read_proposals

    src = Path(proposals_file)
    proposals = read_proposals(src, expect_method=proposal)
    manifest = build_manifest(proposals, cfg)
    if len(manifest.top) == 0:
        raise DataError(
            src,
            f"no pairs from {len(proposals)} images ({manifest.counts}); need images with at "
            f"least 2 distinct proposals and pairs with IoU in [{cfg.min_iou}, "
            f"{cfg.max_iou}]",
            kind="no_pairs",
        )
    attrs = {
        "offset_scale": cfg.offset_scale,
        "source_proposals": str(proposals.provenance.get("method", "")),
        "proposals_sha256": sha256_file(src),
        "proposals_file": str(src),
        "dataset": str(proposals.provenance.get("dataset", dataset)),
        "split": split,
        "created_by": "pairs",
        "code_version": code_version(),
        "params": provenance,
    }
    write_manifest(out_file, manifest, attrs)
    metrics = manifest.metrics()
    log.info("pairs %s: %s", split, metrics)
    return metrics


def run_pairs(
    cfg: PairsConfig,
    proposal: str,
    dataset: str,
    splits: list[str],
    paths: PathsConfig,
    provenance: dict[str, Any],
) -> dict:
    """DVC stage ``pairs``: manifests for ``splits`` (the SCN and held-out test splits),
    from ``<paths.proposals>/<split>.h5`` into ``<paths.pairs>/<split>.h5``."""
    scn_split = splits[0]
    splits = list(dict.fromkeys(splits))
    per_split = {
        split: make_split(
            cfg,
            proposal,
            dataset,
            split,
            paths.proposals_file(split),
            paths.pairs_file(split),
            provenance,
        )
        for split in splits
    }
    keys = ("pairs", "share_iou_below_0.2", "share_overlapping")
    return {
        "method": proposal,
        # the SCN training split's figures, whatever its name (the headline's)
        "scn": {"split": scn_split, **{k: per_split[scn_split].get(k) for k in keys}},
        "splits": per_split,
    }
