"""Training pairs for the SCN: (bottom input of patch j, offset o_ij, target of patch i).

A :class:`PairDataset` joins a pairs manifest (``<paths.pairs>/<split>.h5``) with the
target cache of the same split (``<paths.targets>/<split>.h5``, docs/artifacts.md). The
bottom input of a pair is either

- ``source="trunk"``: row ``bottom`` of the cached frozen trunk output, so an epoch runs
  only the trainable layers, or
- ``source="image"``: the bottom patch cropped from its image, resized and normalised
  (scope ``all``, or no trunk cache), for a full forward pass.

The target is row ``top`` of the cached top-stream ``features``. Indexing takes a list of
pair indices and returns a whole batch (rows read with one sorted HDF5 read, or from
memory when the array is small enough, see ``preload_max_mb``). HDF5 files are opened
lazily in the process that reads them, so each DataLoader worker has its own handle
(solo-learn's ``H5Dataset`` habit).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.boxes import pair_iou
from pipeline.data.voc import load_rgb
from pipeline.errors import DataError

log = logging.getLogger(__name__)

Source = Literal["trunk", "image"]
TargetNorm = Literal["raw", "layer_norm"]


def layer_norm_rows(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Each row of ``x`` (B, D) normalised over its D dimensions (zero mean, unit variance;
    ``torch.nn.functional.layer_norm(h, (D,))`` without affine parameters), float32."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=1, keepdims=True)
    var = x.var(axis=1, keepdims=True)
    return ((x - mean) / np.sqrt(var + eps)).astype(np.float32)


def shuffled_tops(top: np.ndarray, pair_image: np.ndarray, seed: int) -> np.ndarray:
    """A permutation of the pairs' top patches such that every pair gets the top patch of a
    pair from *another* image (the null-objective control, ``train.pairs: shuffled``).

    The pairs are grouped by image, images in a random order (``seed``) and pairs in a
    random order within each; pair k of that order takes the top of pair k + g (cyclically),
    with g the largest number of pairs of one image: two positions at most g - 1 apart
    hold the only pairs that can share an image, so no pair keeps a top of its own image.
    Each top is used exactly once (the targets' distribution is unchanged). Needs
    ``len(top) >= 2 g``, i.e. no image holding more than half of the pairs.
    """
    top = np.asarray(top, dtype=np.int64)
    pair_image = np.asarray(pair_image, dtype=np.int64)
    n = len(top)
    if n == 0:
        return top.copy()
    rng = np.random.default_rng([int(seed), 0x5C])
    images, inverse, counts = np.unique(pair_image, return_inverse=True, return_counts=True)
    g = int(counts.max())
    if n < 2 * g:
        raise ValueError(
            f"train.pairs: shuffled needs every image to hold at most half of the pairs; "
            f"one image holds {g} of {n}"
        )
    image_rank = rng.permutation(len(images))[inverse]  # (n,) random rank of each pair's image
    order = np.lexsort((rng.random(n), image_rank))  # grouped by image, random within
    out = np.empty_like(top)
    out[order] = top[np.roll(order, -g)]
    return out


def plain_attr(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_attrs(path: str | Path) -> dict[str, Any]:
    """All attributes of an HDF5 file as plain Python values."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found", kind="missing_file")
    try:
        with h5py.File(path, "r") as fh:
            return {k: plain_attr(v) for k, v in fh.attrs.items()}
    except OSError as err:
        raise DataError(path, f"not a readable HDF5 file: {err}") from None


class PairDataset(Dataset):
    """Pairs of one split joined with its target cache; ``ds[[k1, k2, ...]]`` is a batch.

    A batch is a dict: ``x`` (B, ...) float32 bottom inputs (trunk rows or normalised
    image crops (B, 3, S, S)), ``offset`` (B, 8) float32, ``target`` (B, D) float32,
    ``index`` (B,) int64 pair indices.

    ``images`` maps image id -> image file (needed for ``source="image"``);
    ``crop`` is ``(input_size, mean, std)`` for the image path.
    """

    def __init__(
        self,
        pairs_path: str | Path,
        targets_path: str | Path,
        source: Source = "trunk",
        images: Mapping[str, str | Path] | None = None,
        crop: tuple[int, Sequence[float], Sequence[float]] | None = None,
        preload_max_mb: int = 2048,
        image_cache: int = 64,
        target_norm: TargetNorm = "raw",
        shuffle_seed: int | None = None,
    ):
        self.pairs_path = Path(pairs_path)
        self.targets_path = Path(targets_path)
        self.source = source
        self.preload_max_bytes = int(preload_max_mb) * 2**20
        self.image_cache = image_cache
        if source not in ("trunk", "image"):
            raise ValueError(f"source: {source!r} is not a valid choice; allowed: trunk, image")
        if target_norm not in ("raw", "layer_norm"):
            raise ValueError(f"target_norm: {target_norm!r}; allowed: raw, layer_norm")
        self.target_norm = target_norm
        #: when True a batch's ``x`` is the cached ``features`` of the bottom patches (h1 of
        #: the untrained bottom stream), not its input: set while the bottom stream is frozen
        self.h1_cached = False
        self._read_manifest()
        self._check_targets()
        #: (M,) IoU of each pair's two patches (of the real pairs, before any shuffling)
        self.pair_iou = pair_iou(self.patch_box[self.top], self.patch_box[self.bottom])
        self.shuffled = shuffle_seed is not None
        if self.shuffled:
            self.top = shuffled_tops(self.top, self.patch_image[self.bottom], shuffle_seed)
        if source == "image":
            if images is None or crop is None:
                raise ValueError("source='image' needs the image files and the crop settings")
            missing = [i for i in set(self.image_ids[self.patch_image]) if i not in images]
            if missing:
                raise DataError(
                    self.pairs_path,
                    f"{len(missing)} image ids are not in the dataset split (e.g. {missing[0]!r})",
                    kind="missing_image",
                )
            self.images = {k: str(v) for k, v in images.items()}
            self.input_size = int(crop[0])
            self.mean = tuple(float(v) for v in crop[1])
            self.std = tuple(float(v) for v in crop[2])
        self._fh: h5py.File | None = None
        self._arrays: dict[str, Any] = {}
        self._decoded: OrderedDict[str, np.ndarray] = OrderedDict()

    # ----------------------------------------------------------------- reading
    def _read_manifest(self) -> None:
        path = self.pairs_path
        if not path.is_file():
            raise DataError(path, "pairs manifest not found (run the pairs stage)", "missing_file")
        try:
            with h5py.File(path, "r") as fh:
                self.top = np.asarray(fh["pairs/top"][:], dtype=np.int64)  # (M,)
                self.bottom = np.asarray(fh["pairs/bottom"][:], dtype=np.int64)  # (M,)
                self.offset = np.asarray(fh["pairs/offset"][:], dtype=np.float32)  # (M, 8)
                self.patch_box = np.asarray(fh["patches/box"][:], dtype=np.float32)  # (P, 4)
                self.patch_image = np.asarray(fh["patches/image_index"][:], dtype=np.int64)
                self.image_ids = np.array([plain_attr(s) for s in fh["image_ids"][:]], dtype=object)
                self.pairs_attrs = {k: plain_attr(v) for k, v in fh.attrs.items()}
        except KeyError as err:
            raise DataError(path, f"missing dataset {err} (see docs/artifacts.md)") from None
        except OSError as err:
            raise DataError(path, f"not a readable HDF5 file: {err}") from None
        n_patches = len(self.patch_box)
        m = len(self.top)
        if len(self.bottom) != m or self.offset.shape != (m, 8):
            raise DataError(
                path,
                f"pairs/top {self.top.shape}, pairs/bottom {self.bottom.shape} and "
                f"pairs/offset {self.offset.shape} disagree; allowed: (M,), (M,), (M, 8)",
            )
        for name, idx in (("pairs/top", self.top), ("pairs/bottom", self.bottom)):
            if m and (idx.min() < 0 or idx.max() >= n_patches):
                raise DataError(
                    path, f"{name} holds indices outside [0, {n_patches}) (the patch count)"
                )
        if n_patches and (
            self.patch_image.min() < 0 or self.patch_image.max() >= len(self.image_ids)
        ):
            raise DataError(path, "patches/image_index points outside image_ids")
        if not np.isfinite(self.offset).all():
            raise DataError(path, "pairs/offset holds NaN or infinite values")
        self.n_patches = n_patches

    def _check_targets(self) -> None:
        path = self.targets_path
        if not path.is_file():
            raise DataError(path, "target cache not found (run the targets stage)", "missing_file")
        try:
            with h5py.File(path, "r") as fh:
                if "features" not in fh:
                    raise DataError(path, "missing dataset 'features' (see docs/artifacts.md)")
                self.features_shape = tuple(fh["features"].shape)
                self.trunk_shape = tuple(fh["trunk"].shape) if "trunk" in fh else None
                self.targets_attrs = {k: plain_attr(v) for k, v in fh.attrs.items()}
        except OSError as err:
            raise DataError(path, f"not a readable HDF5 file: {err}") from None
        if len(self.features_shape) != 2 or self.features_shape[0] != self.n_patches:
            raise DataError(
                path,
                f"features has shape {self.features_shape}; allowed: ({self.n_patches}, D) "
                f"for the {self.n_patches} patches of {self.pairs_path}",
            )
        if self.source == "trunk":
            if self.trunk_shape is None:
                raise DataError(
                    path, "no 'trunk' dataset: set targets.trunk_cache true or train from images"
                )
            if self.trunk_shape[0] != self.n_patches:
                raise DataError(
                    path, f"trunk has {self.trunk_shape[0]} rows; allowed: {self.n_patches}"
                )

    @staticmethod
    def has_trunk(targets_path: str | Path) -> bool:
        """Whether a target cache holds the trunk output (``trunk`` dataset)."""
        try:
            with h5py.File(targets_path, "r") as fh:
                return "trunk" in fh
        except OSError as err:
            raise DataError(targets_path, f"not a readable HDF5 file: {err}") from None

    @property
    def target_dim(self) -> int:
        return int(self.features_shape[1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one bottom input: a trunk row, or (3, S, S)."""
        if self.source == "trunk":
            return tuple(self.trunk_shape[1:])
        return (3, self.input_size, self.input_size)

    def __len__(self) -> int:
        return len(self.top)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()  # h5py handles and caches do not cross processes
        state["_fh"], state["_arrays"], state["_decoded"] = None, {}, OrderedDict()
        return state

    def _array(self, name: str):
        """The dataset ``name`` of the target cache: in memory when small, else the h5 handle."""
        if name not in self._arrays:
            if self._fh is None:
                self._fh = h5py.File(self.targets_path, "r")
            ds = self._fh[name]
            nbytes = int(np.prod(ds.shape)) * 4  # held as float32
            if nbytes <= self.preload_max_bytes:
                self._arrays[name] = np.asarray(ds[:], dtype=np.float32)
            else:
                log.info("%s[%s]: %.0f MB, read by row", self.targets_path, name, nbytes / 2**20)
                self._arrays[name] = ds
        return self._arrays[name]

    @staticmethod
    def _rows(array, rows: np.ndarray) -> np.ndarray:
        if isinstance(array, np.ndarray):
            return array[rows]
        uniq, inverse = np.unique(rows, return_inverse=True)  # h5py wants increasing rows
        return np.asarray(array[uniq], dtype=np.float32)[inverse]

    def patch_features(self, patches: np.ndarray) -> np.ndarray:
        """The cached top-stream ``features`` of ``patches`` (B,) -> (B, D) float32: the
        targets of the pairs whose top patch they are, and h1 of the untrained bottom
        stream for the pairs whose bottom patch they are (W_B = W_T at the start)."""
        return self._rows(self._array("features"), np.asarray(patches, dtype=np.int64))

    def target_features(self, patches: np.ndarray) -> np.ndarray:
        """The training targets of ``patches`` (B,) -> (B, D) float32: their cached
        ``features``, layer-normalised per row with ``target_norm="layer_norm"``."""
        feats = self.patch_features(patches)
        return layer_norm_rows(feats) if self.target_norm == "layer_norm" else feats

    def _image(self, image_id: str) -> np.ndarray:
        if image_id in self._decoded:
            self._decoded.move_to_end(image_id)
            return self._decoded[image_id]
        arr = load_rgb(Path(self.images[image_id]))  # (H, W, 3) uint8
        self._decoded[image_id] = arr
        while len(self._decoded) > self.image_cache:
            self._decoded.popitem(last=False)
        return arr

    def crops(self, patches: np.ndarray) -> torch.Tensor:
        """Normalised crops of ``patches`` (B,) -> (B, 3, S, S), each image decoded once."""
        from pipeline.backbones.preprocess import crop_resize, normalize

        out = torch.empty((len(patches), 3, self.input_size, self.input_size))
        image_of = self.patch_image[patches]
        for img in np.unique(image_of):
            where = np.flatnonzero(image_of == img)
            image = self._image(str(self.image_ids[img]))
            boxes = self.patch_box[patches[where]]  # (K, 4)
            crop = torch.as_tensor(np.asarray(crop_resize(image, boxes, self.input_size)))
            out[torch.as_tensor(where)] = crop.float()  # (K, 3, S, S) in [0, 1]
        return normalize(out, self.mean, self.std)  # (B, 3, S, S)

    def __getitem__(self, index: int | Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        idx = np.atleast_1d(np.asarray(index, dtype=np.int64))  # (B,)
        top, bottom = self.top[idx], self.bottom[idx]
        if self.h1_cached:
            x = torch.from_numpy(self.patch_features(bottom))  # (B, D) h1 of the frozen stream
        elif self.source == "trunk":
            x = torch.from_numpy(self._rows(self._array("trunk"), bottom))  # (B, ...)
        else:
            x = self.crops(bottom)  # (B, 3, S, S)
        target = torch.from_numpy(self.target_features(top))  # (B, D)
        return {
            "x": x,
            "offset": torch.from_numpy(self.offset[idx]),  # (B, 8)
            "target": target,
            "index": torch.from_numpy(idx),
        }

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh, self._arrays = None, {}

    def describe(self) -> dict[str, Any]:
        return {
            "pairs": len(self),
            "patches": self.n_patches,
            "source": self.source,
            "input_shape": list(self.input_shape),
            "target_dim": self.target_dim,
            "target": self.target_norm,
            "pairs_order": "shuffled" if self.shuffled else "real",
        }


def targets_provenance(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance attributes of a target cache, JSON-safe (for model.pt)."""
    out = {}
    for k, v in attrs.items():
        try:
            json.dumps(v)
            out[k] = v
        except TypeError:
            out[k] = str(v)
    return out
