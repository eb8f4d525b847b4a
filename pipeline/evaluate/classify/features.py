"""Frozen features for the linear-SVM evaluation, cached in HDF5 with provenance.

Two *extractors* map normalised images ``(B, 3, S, S)`` to the representation ``h1``
``(B, D)``: the ORIGINAL pretrained network (``Backbone.features``) and the trained
bottom stream (``TrainedNetwork.features``). Two *settings* feed them:

- ``obj``: every ground-truth object of a split, cropped and warped to ``S x S``
  (``preprocess.crop_resize``, RoIAlign-style bilinear); single label: the row of an
  object is 1 in its class column (0 when the object is difficult) and -1 elsewhere;
- ``img``: every whole image, warped to ``S x S`` (``preprocess.resize_image``);
  multi-label with VOC image labels 1 / -1 / 0 (``VOCDataset.image_labels``).

Cache file ``<dir>/<network>_<setting>_<split>.h5`` (``<dir>``:
``<paths.original>/classify`` for the original network, stage ``classify_original``;
``<paths.classify>`` for the SCN): ``features`` (N, D) float32, ``labels`` (N, C)
int8, for ``obj`` also ``image_index`` (N,) int32, ``box`` (N, 4) float32,
``class_index`` (N,) int16, ``difficult`` (N,) bool; attrs: ``created_by``,
``code_version``, ``network``, ``setting``, ``split``, ``dataset``, ``backbone``,
``weights_sha256``, ``model_sha256`` (the trained model file for ``scn``), ``layer``,
``input_size``, ``mean``, ``std``, ``items_sha256`` (image ids + boxes + labels),
``params``. A cache is reused only when all of these but ``code_version`` and
``params`` match what would be computed now; otherwise it is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from pipeline.backbones.preprocess import crop_resize, normalize, resize_image
from pipeline.data.voc import VOCDataset
from pipeline.evaluate.compare import ORIGINAL, TRAINED
from pipeline.io import atomic_path
from pipeline.provenance import code_version, sha256_file

log = logging.getLogger(__name__)

SETTINGS = ("obj", "img")
# attrs that must match for a cache to be reused
CHECKED_ATTRS = (
    "network",
    "setting",
    "split",
    "dataset",
    "backbone",
    "weights_sha256",
    "model_sha256",
    "layer",
    "input_size",
    "mean",
    "std",
    "items_sha256",
)


@dataclass
class Extractor:
    """A frozen feature function with what identifies it (its provenance)."""

    network: str  # ORIGINAL, TRAINED ("scn") or "trunk" (the diagnosis)
    fn: Callable[[torch.Tensor], torch.Tensor]  # (B, 3, S, S) normalised -> (B, D)
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    backbone: str
    layer: str
    weights_sha256: str
    model_sha256: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def provenance(self) -> dict:
        return {
            "network": self.network,
            "backbone": self.backbone,
            "weights_sha256": self.weights_sha256,
            "model_sha256": self.model_sha256,
            "layer": self.layer,
            "input_size": int(self.input_size),
            "mean": json.dumps([float(v) for v in self.mean]),
            "std": json.dumps([float(v) for v in self.std]),
        }

    @torch.no_grad()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) float32 in [0, 1] -> (B, D) float32 features."""
        x = torch.from_numpy(normalize(batch, self.mean, self.std)).to(self.device)  # (B, 3, S, S)
        return self.fn(x).float().cpu().numpy()  # (B, D)


@dataclass
class ObjectTable:
    """The ground-truth objects of a split, in image order (one row per object)."""

    image_index: np.ndarray  # (N,) int32 into dataset.images
    box: np.ndarray  # (N, 4) float32, project convention
    class_index: np.ndarray  # (N,) int16
    difficult: np.ndarray  # (N,) bool

    @classmethod
    def from_dataset(cls, ds: VOCDataset) -> ObjectTable:
        rows = [
            (i, o.box, ds.classes.index(o.name), o.difficult)
            for i, im in enumerate(ds.images)
            for o in im.objects
        ]
        return cls(
            image_index=np.array([r[0] for r in rows], dtype=np.int32),
            box=np.array([r[1] for r in rows], dtype=np.float32).reshape(-1, 4),
            class_index=np.array([r[2] for r in rows], dtype=np.int16),
            difficult=np.array([r[3] for r in rows], dtype=bool),
        )

    def __len__(self) -> int:
        return len(self.image_index)

    def labels(self, n_classes: int) -> np.ndarray:
        """(N, C) int8: 1 own class (0 if difficult), -1 every other class."""
        y = -np.ones((len(self), n_classes), dtype=np.int8)
        y[np.arange(len(self)), self.class_index] = np.where(self.difficult, 0, 1)
        return y


def _items_hash(ds: VOCDataset, *arrays: np.ndarray) -> str:
    h = hashlib.sha256("\n".join(ds.ids).encode())
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _batched(
    ds: VOCDataset,
    crops_of: Callable[[int, np.ndarray], np.ndarray],
    image_indices: list[int],
    extractor: Extractor,
    batch_size: int,
    n_rows: int,
    desc: str,
) -> np.ndarray:
    """Features of the crops of each image, in order; (n_rows, D) float32."""
    out: np.ndarray | None = None
    pending: list[np.ndarray] = []
    row = 0

    def flush() -> None:
        nonlocal out, row, pending
        if not pending:
            return
        batch = np.concatenate(pending)  # (B, 3, S, S)
        feats = extractor(batch)  # (B, D)
        if out is None:
            out = np.zeros((n_rows, feats.shape[1]), dtype=np.float32)
        out[row : row + len(feats)] = feats
        row += len(feats)
        pending = []

    for i in tqdm(image_indices, desc=desc, leave=False):
        # the dataset decoded every image when it was opened (bad ones skipped and
        # counted there); a DataError now means the file changed since: fatal
        image = ds.load_image(ds.images[i])  # (H, W, 3) uint8
        pending.append(crops_of(i, image))
        if sum(len(p) for p in pending) >= batch_size:
            flush()
    flush()
    if out is None:
        return np.zeros((n_rows, 0), dtype=np.float32)
    return out


def compute_features(
    ds: VOCDataset, setting: str, extractor: Extractor, batch_size: int
) -> dict[str, np.ndarray]:
    """Features and labels of ``setting`` (obj | img) on ``ds`` with ``extractor``."""
    size = extractor.input_size
    desc = f"{extractor.network} {setting} {ds.split}"
    if setting == "obj":
        table = ObjectTable.from_dataset(ds)
        per_image: dict[int, np.ndarray] = {}
        for i in range(len(ds)):
            per_image[i] = table.box[table.image_index == i]

        def crops(i: int, image: np.ndarray) -> np.ndarray:
            return crop_resize(image, per_image[i], size)  # (K, 3, S, S)

        feats = _batched(ds, crops, list(range(len(ds))), extractor, batch_size, len(table), desc)
        return {
            "features": feats,
            "labels": table.labels(len(ds.classes)),
            "image_index": table.image_index,
            "box": table.box,
            "class_index": table.class_index,
            "difficult": table.difficult,
        }
    if setting == "img":

        def whole(i: int, image: np.ndarray) -> np.ndarray:
            return resize_image(image, size)[None]  # (1, 3, S, S)

        feats = _batched(ds, whole, list(range(len(ds))), extractor, batch_size, len(ds), desc)
        return {"features": feats, "labels": ds.image_labels()}
    raise ValueError(f"setting: {setting!r} is not valid; allowed: {', '.join(SETTINGS)}")


def item_attrs(ds: VOCDataset, setting: str, dataset: str) -> dict:
    """The attrs that identify the items of a cache (not the network)."""
    if setting == "obj":
        t = ObjectTable.from_dataset(ds)
        items = _items_hash(ds, t.image_index, t.box, t.class_index, t.difficult)
    else:
        items = _items_hash(ds, ds.image_labels())
    return {"setting": setting, "split": ds.split, "dataset": dataset, "items_sha256": items}


def expected_attrs(ds: VOCDataset, setting: str, extractor: Extractor, dataset: str) -> dict:
    return {**item_attrs(ds, setting, dataset), **extractor.provenance()}


def cache_file(cache_dir: Path, network: str, setting: str, split: str) -> Path:
    return Path(cache_dir) / f"{network}_{setting}_{split}.h5"


def _read_cache(path: Path, expected: dict) -> dict[str, np.ndarray] | None:
    """The cached arrays when ``path`` exists and its provenance matches, else None."""
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as fh:
            for key in CHECKED_ATTRS:
                have = fh.attrs.get(key)
                if isinstance(have, bytes):
                    have = have.decode()
                if isinstance(have, np.generic):
                    have = have.item()
                if have != expected[key]:
                    log.info(
                        "%s: stale cache (%s is %r, expected %r); recomputing",
                        path,
                        key,
                        have,
                        expected[key],
                    )
                    return None
            return {k: fh[k][()] for k in fh.keys()}
    except OSError as err:
        log.warning("%s: unreadable cache (%s); recomputing", path, err)
        return None


def write_cache(path: Path, arrays: dict[str, np.ndarray], attrs: dict, params_json: str) -> None:
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as fh:
            for k, v in arrays.items():
                fh.create_dataset(k, data=v)
            for k, v in attrs.items():
                fh.attrs[k] = v
            fh.attrs["created_by"] = "classify"
            fh.attrs["code_version"] = code_version()
            fh.attrs["params"] = params_json


def cached_features(
    cache_dir: Path,
    ds: VOCDataset,
    setting: str,
    extractor: Extractor,
    dataset: str,
    batch_size: int,
    params_json: str = "{}",
) -> dict[str, np.ndarray]:
    """Features of (network, setting, split) from the cache, computed and written if stale."""
    path = cache_file(cache_dir, extractor.network, setting, ds.split)
    expected = expected_attrs(ds, setting, extractor, dataset)
    cached = _read_cache(path, expected)
    if cached is not None:
        log.info("%s: cache hit (%d rows)", path, len(cached["features"]))
        return cached
    arrays = compute_features(ds, setting, extractor, batch_size)
    write_cache(path, arrays, expected, params_json)
    log.info("%s: wrote %s features", path, arrays["features"].shape)
    return arrays


def backbone_extractor(
    bb, network: str, fn: Callable[[torch.Tensor], torch.Tensor], layer: str, device: torch.device
) -> Extractor:
    """Extractor ``fn`` of a built :class:`pipeline.backbones.Backbone` ``bb``: its input
    size, normalisation, name and weights identify the features."""
    return Extractor(
        network=network,
        fn=fn,
        input_size=bb.input_size,
        mean=tuple(bb.mean),
        std=tuple(bb.std),
        backbone=bb.name,
        layer=layer,
        weights_sha256=bb.weights_sha256,
        device=device,
    )


def original_extractor(backbone, device: torch.device) -> Extractor:
    """Extractor of a built :class:`pipeline.backbones.Backbone` (the original network)."""
    backbone.model.to(device)
    return backbone_extractor(backbone, ORIGINAL, backbone.features, backbone.layer, device)


def trunk_extractor(bb, trunk: torch.nn.Module, device: torch.device) -> Extractor:
    """The frozen trunk below ``network.scope`` of backbone ``bb``, flattened, as a feature
    extractor (the diagnosis): the classify crops and batching, rows ``(N, prod(trunk shape))``."""
    trunk = trunk.to(device).eval()

    def fn(x: torch.Tensor) -> torch.Tensor:
        return trunk(x).flatten(1)  # (B, prod(trunk shape))

    return backbone_extractor(bb, "trunk", fn, "trunk", device)


def trained_extractor(trained, model_path: Path, device: torch.device) -> Extractor:
    """Extractor of the bottom stream of a loaded trained network (``TrainedNetwork`` of
    ``model_path``, whose SHA-256 identifies it), whatever its method."""
    return Extractor(
        network=TRAINED,
        fn=trained.features,
        input_size=trained.input_size,
        mean=trained.mean,
        std=trained.std,
        backbone=trained.config.get("backbone"),
        layer=str(trained.config.get("layer", "")),
        weights_sha256=str(trained.config.get("provenance", {}).get("weights_sha256", "")),
        model_sha256=sha256_file(model_path),
        device=device,
    )


def read_features(
    cache_dir: Path, ds: VOCDataset, setting: str, network: str, dataset: str
) -> dict[str, np.ndarray]:
    """Another stage's cache of (network, setting, split), read only: a
    :class:`~pipeline.errors.DataError` naming the file when it is missing or holds other
    items (the network's own provenance is that stage's to check)."""
    from pipeline.errors import DataError

    path = cache_file(cache_dir, network, setting, ds.split)
    expected = {"network": network, **item_attrs(ds, setting, dataset)}
    if not path.is_file():
        raise DataError(path, "missing: features of the stage that writes it", kind="missing")
    try:
        with h5py.File(path, "r") as fh:
            for key, want in expected.items():
                have = fh.attrs.get(key)
                have = have.decode() if isinstance(have, bytes) else have
                if have != want:
                    raise DataError(path, f"{key} is {have!r}, expected {want!r}; stale features",
                                    kind="provenance_mismatch")  # fmt: skip
            return {k: fh[k][()] for k in fh.keys()}
    except OSError as err:
        raise DataError(path, f"unreadable ({err})", kind="corrupt") from err
