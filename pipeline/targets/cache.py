"""Stage ``targets``: cache the frozen top stream's representation of every unique patch.

For each split's pair manifest (``<paths.pairs>/<split>.h5``) every unique patch is
cropped from its image, resized to ``network.input_size``, normalised and run through the
frozen backbone in eval mode. ``<paths.targets>/<split>.h5`` stores (docs/artifacts.md):

- ``features`` (P, D): the representation (the regression target); row p = patch p.
- ``trunk`` (P, ...): the frozen trunk output feeding the first trainable layer of
  ``network.scope`` (when ``targets.trunk_cache`` and the scope is not ``all``), shared
  by the top and bottom streams, so training only runs the trainable layers.

DataLoader workers decode each image once and yield its crops in chunks; the main process
batches them, runs ``head(trunk(x))`` (exactly ``Backbone.features``) and streams rows
into chunked, compressed datasets of a temporary file renamed when complete.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from pipeline.backbones.preprocess import crop_resize, normalize
from pipeline.devices import autocast_dtype, resolve_device
from pipeline.errors import DataError
from pipeline.io import TMP_MARK, atomic_path
from pipeline.provenance import code_version, sha256_file

if TYPE_CHECKING:
    from pipeline.artifacts import PathsConfig
    from pipeline.backbones.config import NetworkConfig
    from pipeline.data.voc import DatasetRef
    from pipeline.targets.config import TargetsConfig

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024  # target size of one HDF5 chunk
CACHE_BYTES = 64 * 1024 * 1024  # HDF5 chunk cache of the file being written
BOX_TOLERANCE = 1.0  # pixels a box may overhang its image (rounding upstream)


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class Patches:
    """The unique patches of a pair manifest."""

    path: Path
    image_ids: list[str]
    image_sizes: np.ndarray  # (n_images, 2) int32 (width, height)
    image_index: np.ndarray  # (P,) int32
    boxes: np.ndarray  # (P, 4) float32

    def groups(self) -> list[tuple[int, np.ndarray]]:
        """(image k, patch indices of image k in increasing order) for images with patches."""
        order = np.argsort(self.image_index, kind="stable")
        ks, starts = np.unique(self.image_index[order], return_index=True)
        bounds = [*starts[1:].tolist(), len(order)]
        return [(int(k), order[s:e]) for k, s, e in zip(ks, starts, bounds, strict=True)]


def read_patches(path: str | Path) -> Patches:
    """Read and check the patch table of a pairs file; :class:`DataError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "pairs manifest not found (run the pairs stage)", "missing_pairs")
    keys = ("image_ids", "image_sizes", "patches/image_index", "patches/box")
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise DataError(path, f"not a readable HDF5 file: {err}", "corrupt_pairs") from None
    with fh:
        missing = [k for k in keys if k not in fh]
        if missing:
            raise DataError(
                path, f"missing datasets {missing}; expected {list(keys)}", "malformed_pairs"
            )
        ids = [s.decode() if isinstance(s, bytes) else str(s) for s in fh["image_ids"][:]]
        sizes = np.asarray(fh["image_sizes"][:], dtype=np.int64).reshape(-1, 2)
        index = np.asarray(fh["patches/image_index"][:], dtype=np.int64).reshape(-1)
        boxes = np.asarray(fh["patches/box"][:], dtype=np.float32)
    if len(sizes) != len(ids):
        raise DataError(
            path, f"{len(ids)} image_ids but {len(sizes)} image_sizes", "malformed_pairs"
        )
    if boxes.ndim != 2 or boxes.shape[1:] != (4,) or len(boxes) != len(index):
        raise DataError(
            path,
            f"patches/box is {boxes.shape}, patches/image_index "
            f"{index.shape}; expected (P, 4) and (P,)",
            "malformed_pairs",
        )
    if len(index) and (index.min() < 0 or index.max() >= len(ids)):
        raise DataError(path, f"patches/image_index outside [0, {len(ids)})", "malformed_pairs")
    w, h = sizes[index, 0], sizes[index, 1]
    bad = (
        (boxes[:, 2] <= boxes[:, 0])
        | (boxes[:, 3] <= boxes[:, 1])
        | (boxes[:, 0] < -BOX_TOLERANCE)
        | (boxes[:, 1] < -BOX_TOLERANCE)
        | (boxes[:, 2] > w + BOX_TOLERANCE)
        | (boxes[:, 3] > h + BOX_TOLERANCE)
    )
    if bad.any():
        p = int(np.flatnonzero(bad)[0])
        raise DataError(
            path,
            f"patch {p}: box {boxes[p].tolist()} is empty or outside its "
            f"{w[p]}x{h[p]} image {ids[index[p]]!r} ({int(bad.sum())} bad boxes)",
            "malformed_pairs",
        )
    return Patches(path, ids, sizes.astype(np.int32), index.astype(np.int32), boxes)


# --------------------------------------------------------------------------- loading


class PatchCrops(IterableDataset):
    """Yields ``(patch indices (n,), crops (n, 3, S, S) normalised float32)`` chunks.

    Each image is decoded once and its crops yielded in chunks of at most ``chunk``
    patches; worker w of n handles images w, w + n, ... A bad image yields an error
    record (re-raised as :class:`DataError` in the main process).
    """

    def __init__(
        self,
        patches: Patches,
        image_files: Mapping[str, Path],
        size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        chunk: int,
    ):
        super().__init__()
        self.patches, self.size, self.mean, self.std, self.chunk = patches, size, mean, std, chunk
        self.groups = patches.groups()
        self.files = []
        for k, _ in self.groups:
            image_id = patches.image_ids[k]
            if image_id not in image_files:
                raise DataError(
                    patches.path, f"image {image_id!r} is not in the dataset split", "missing_image"
                )
            self.files.append(Path(image_files[image_id]))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from pipeline.data.voc import load_rgb

        info = get_worker_info()
        start, step = (info.id, info.num_workers) if info else (0, 1)
        for g in range(start, len(self.groups), step):
            k, rows = self.groups[g]
            path = self.files[g]
            try:
                image = load_rgb(path)
                want = tuple(int(v) for v in self.patches.image_sizes[k])
                if (image.shape[1], image.shape[0]) != want:
                    raise DataError(
                        path,
                        f"image is {image.shape[1]}x{image.shape[0]} but the "
                        f"pairs manifest says {want[0]}x{want[1]}",
                        "size_mismatch",
                    )
            except DataError as err:
                yield {"error": (str(err.path), err.problem, err.kind)}
                return
            for s in range(0, len(rows), self.chunk):
                idx = rows[s : s + self.chunk]
                crops = crop_resize(image, self.patches.boxes[idx], self.size)  # (n, 3, S, S)
                x = normalize(crops, self.mean, self.std)  # (n, 3, S, S)
                yield {"index": torch.from_numpy(idx.astype(np.int64)), "x": torch.from_numpy(x)}


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers crop; the main process owns the math threads


def batches(loader: DataLoader, batch_size: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Re-batch variable-size chunks into batches of exactly ``batch_size`` (last smaller)."""
    idx_buf: list[torch.Tensor] = []
    x_buf: list[torch.Tensor] = []
    n = 0
    for item in loader:
        if "error" in item:
            path, problem, kind = item["error"]
            raise DataError(path, problem, kind)
        idx_buf.append(item["index"])
        x_buf.append(item["x"])
        n += len(item["index"])
        while n >= batch_size:
            idx, x = torch.cat(idx_buf), torch.cat(x_buf)  # (n,), (n, 3, S, S)
            yield idx[:batch_size].numpy(), x[:batch_size]
            idx_buf, x_buf, n = [idx[batch_size:]], [x[batch_size:]], n - batch_size
    if n:
        yield torch.cat(idx_buf).numpy(), torch.cat(x_buf)


# --------------------------------------------------------------------------- writing


def _dataset(
    fh: h5py.File, name: str, rows: int, shape: tuple[int, ...], dtype: str, compression: str
) -> h5py.Dataset:
    row_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    chunk_rows = int(max(1, min(rows, CHUNK_BYTES // max(row_bytes, 1))))
    opts: dict[str, Any] = {}
    if compression == "gzip":
        opts = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
    elif compression == "lzf":
        opts = {"compression": "lzf", "shuffle": True}
    return fh.create_dataset(
        name, shape=(rows, *shape), dtype=dtype, chunks=(chunk_rows, *shape), **opts
    )


def _write_rows(ds: h5py.Dataset, idx: np.ndarray, values: np.ndarray) -> None:
    order = np.argsort(idx)
    idx, values = idx[order], values[order]
    if idx[-1] - idx[0] + 1 == len(idx):  # contiguous: one slab
        ds[int(idx[0]) : int(idx[-1]) + 1] = values
    else:
        ds[idx] = values


def expected_attrs(bb, scope: str | None = None, pairs_path: str | Path | None = None) -> dict:
    """The provenance a reader of a target cache for backbone ``bb`` should insist on."""
    exp: dict[str, Any] = {
        "backbone": bb.name,
        "weights_sha256": bb.weights_sha256,
        "layer": bb.layer,
        "input_size": bb.input_size,
        "mean": list(bb.mean),
        "std": list(bb.std),
    }
    if scope is not None:
        exp["scope"] = scope
    if pairs_path is not None:
        exp["pairs_sha256"] = sha256_file(pairs_path)
    return exp


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bytes):
        a = a.decode()
    if isinstance(a, np.ndarray | list | tuple) or isinstance(b, np.ndarray | list | tuple):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            return bool(np.allclose(a.astype(float), b.astype(float), rtol=1e-6, atol=1e-9))
        return bool(np.all(a == b))
    if isinstance(a, np.generic):
        a = a.item()
    if isinstance(a, float) or isinstance(b, float):
        return bool(np.isclose(float(a), float(b)))
    return a == b


def open_targets(path: str | Path, expected: Mapping[str, Any]) -> h5py.File:
    """Open a target cache read-only after checking its provenance against ``expected``.

    Raises :class:`DataError` naming the first attribute that differs (or is missing),
    with the file's value and the expected one. The caller closes the returned file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "target cache not found (run the targets stage)", "missing_targets")
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise DataError(path, f"not a readable HDF5 file: {err}", "corrupt_targets") from None
    try:
        if "features" not in fh or not fh.attrs.get("complete", False):
            raise DataError(
                path,
                "not a complete target cache (no 'features' or "
                "complete=false); rebuild it (dvc repro targets)",
                "corrupt_targets",
            )
        for key, want in expected.items():
            if key not in fh.attrs:
                raise DataError(
                    path,
                    f"provenance attribute {key!r} is missing; expected {want!r}",
                    "provenance_mismatch",
                )
            have = fh.attrs[key]
            if not _same(have, want):
                have = have.tolist() if isinstance(have, np.ndarray | np.generic) else have
                have = have.decode() if isinstance(have, bytes) else have
                raise DataError(
                    path,
                    f"built for another configuration: {key} is {have!r} "
                    f"in the cache, expected {want!r}; rebuild it (dvc repro "
                    "targets)",
                    "provenance_mismatch",
                )
    except BaseException:
        fh.close()
        raise
    return fh


def build_targets(
    patches: Patches,
    image_files: Mapping[str, Path],
    out: str | Path,
    bb,
    *,
    scope: str,
    dtype: str = "float32",
    trunk_cache: bool = True,
    batch_size: int = 64,
    workers: int = 1,
    device: str = "auto",
    amp: bool = False,
    compression: str = "gzip",
    attrs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the target cache of ``patches`` to ``out`` (atomically); return its metrics."""
    out = Path(out)
    dev = resolve_device(device, "targets.device")
    trunk, head = bb.split(scope)
    trunk, head = trunk.to(dev).eval(), head.to(dev).eval().requires_grad_(False)
    store_trunk = trunk_cache and scope != "all"
    amp_dtype = autocast_dtype(dev) if amp else None
    if amp and amp_dtype is None:
        log.warning("targets.amp: %s has no fast reduced precision; running in float32", dev)
    elif amp_dtype is not None:
        log.info("targets.amp: the frozen network runs under %s autocast on %s", amp_dtype, dev)
    size, n = bb.input_size, len(patches.boxes)
    with torch.inference_mode():  # trunk output shape from one dummy input
        probe = torch.zeros(1, 3, size, size, device=dev)
        trunk_shape = tuple(trunk(probe).shape[1:])
    for stale in out.parent.glob(f"{out.name}{TMP_MARK}*"):
        log.warning("removing %s, left by an interrupted run", stale)
        stale.unlink(missing_ok=True)
    data = PatchCrops(patches, image_files, size, bb.mean, bb.std, chunk=batch_size)
    loader = DataLoader(
        data,
        batch_size=None,
        num_workers=workers,
        worker_init_fn=_worker_init,
        pin_memory=dev.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    forward_s = 0.0
    start = time.perf_counter()
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w", rdcc_nbytes=CACHE_BYTES, rdcc_nslots=10007) as fh:
            feats = _dataset(fh, "features", n, (bb.feature_dim,), dtype, compression)
            tr = _dataset(fh, "trunk", n, trunk_shape, dtype, compression) if store_trunk else None
            bar = tqdm(total=n, desc=f"targets {out.name}", unit="patch", leave=False)
            for idx, x in batches(loader, batch_size):
                t0 = time.perf_counter()
                x = x.to(dev, non_blocking=True)  # (B, 3, S, S)
                with (
                    torch.inference_mode(),
                    torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None),
                ):
                    t = trunk(x)  # (B, *trunk_shape)
                    f = head(t)  # (B, D)
                f_np = f.float().cpu().numpy().astype(dtype, copy=False)  # (B, D)
                t_np = t.float().cpu().numpy().astype(dtype, copy=False) if tr else None
                forward_s += time.perf_counter() - t0
                _write_rows(feats, idx, f_np)
                if tr is not None:
                    _write_rows(tr, idx, t_np)
                bar.update(len(idx))
            bar.close()
            if bar.n != n:
                raise DataError(patches.path, f"computed {bar.n} of {n} patches", "incomplete")
            meta = {
                "backbone": bb.name,
                "weights_sha256": bb.weights_sha256,
                "layer": bb.layer,
                "trunk_layer": bb.trunk_layer(scope) if store_trunk else "",
                "scope": scope,
                "input_size": size,
                "mean": np.asarray(bb.mean, dtype=np.float64),
                "std": np.asarray(bb.std, dtype=np.float64),
                "dtype": dtype,
                "pairs_sha256": sha256_file(patches.path),
                "code_version": code_version(),
                "created_by": "targets",
                "n_patches": n,
                "feature_dim": bb.feature_dim,
                **(attrs or {}),
            }
            for key, value in meta.items():
                fh.attrs[key] = (
                    json.dumps(value, sort_keys=True) if isinstance(value, dict) else value
                )
            fh.attrs["complete"] = True
            trunk_bytes = tr.id.get_storage_size() if tr is not None else 0
            feature_bytes = feats.id.get_storage_size()
    seconds = time.perf_counter() - start
    log.info(
        "wrote %s: %d patches, features %s, trunk %s, %.1f patches/s on %s",
        out,
        n,
        (n, bb.feature_dim),
        (n, *trunk_shape) if store_trunk else "none",
        n / max(seconds, 1e-9),
        dev,
    )
    return {
        "patches": n,
        "feature_dim": bb.feature_dim,
        "trunk_shape": list(trunk_shape) if store_trunk else [],
        "trunk_cache_bytes": int(trunk_bytes),
        "features_bytes": int(feature_bytes),
        "seconds": round(seconds, 3),
        "forward_seconds": round(forward_s, 3),
        "patches_per_s": round(n / max(seconds, 1e-9), 2),
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
    }


# --------------------------------------------------------------------------- stage


def run_targets(
    dataset_ref: DatasetRef,
    backbone: str,
    net: NetworkConfig,
    cfg: TargetsConfig,
    splits: list[str],
    paths: PathsConfig,
    provenance: dict[str, Any],
) -> dict:
    """DVC stage ``targets``: ``<paths.targets>/<split>.h5`` for each of ``splits`` (the SCN
    and held-out test splits), from the patches of ``<paths.pairs>/<split>.h5``;
    ``provenance`` (the params the stage depends on) is recorded in each file. The SCN
    split's images come from ``data.scn_images`` when that is set, checked against the
    hashes the proposals stage recorded (``paths.scn_images_manifest``)."""
    from pipeline.backbones import build_backbone
    from pipeline.data.images import check_scn_images, open_scn_split
    from pipeline.seed import seed_everything

    seed_everything(cfg.seed)
    bb = build_backbone(backbone, weights=net.weights, input_size=net.input_size)
    per_split: dict[str, Any] = {}
    for split in dict.fromkeys(splits):
        patches = read_patches(paths.pairs_file(split))
        ds = open_scn_split(dataset_ref, split, check_images=False, stage="targets")
        check_scn_images(dataset_ref, ds, patches.image_ids, paths.scn_images_manifest)
        files = {im.id: im.path for im in ds}
        per_split[split] = build_targets(
            patches,
            files,
            paths.targets_file(split),
            bb,
            scope=net.scope,
            dtype=cfg.dtype,
            trunk_cache=cfg.trunk_cache,
            batch_size=cfg.batch_size,
            workers=cfg.workers,
            device=cfg.device,
            amp=cfg.amp,
            compression=cfg.compression,
            attrs={"split": split, "dataset": dataset_ref.name, "params": provenance},
        )
    total = sum(m["patches"] for m in per_split.values())
    seconds = sum(m["seconds"] for m in per_split.values())
    first = next(iter(per_split.values()))
    return {
        "patches": total,
        "feature_dim": bb.feature_dim,
        "trunk_cache_bytes": sum(m["trunk_cache_bytes"] for m in per_split.values()),
        "patches_per_s": round(total / max(seconds, 1e-9), 2),
        "device": first["device"],
        "backbone": bb.name,
        "input_size": bb.input_size,
        "scope": net.scope,
        "splits": per_split,
    }
