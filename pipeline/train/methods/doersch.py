"""Doersch et al.'s context prediction as a training method (``method: doersch``).

Doersch, Gupta and Efros, "Unsupervised Visual Representation Learning by Context
Prediction" (ICCV 2015): from two patches of one image, classify the position of the
second relative to the first among the 8 neighbours of a 3x3 grid
(:mod:`pipeline.train.patch_grid`: sampling, gap, jitter, colour precautions).

Model (:class:`RelativePosition`): the SCN's bottom stream, shared by both patches (a
siamese pair, the same backbone registry, weights and trainable scope ``network.scope``:
frozen trunk, trained head), the two representations h1 concatenated, then the fc layers
``doersch.hidden`` with ReLUs and the 8-way classifier, trained with cross-entropy
averaged over the batch. After training only the bottom stream matters: ``model.pt``
holds it in the SCN's format (:func:`pipeline.train.model.bottom_stream_payload`), so
classify and detect load it with :func:`~pipeline.train.model.load_trained` exactly as
the SCN's.

Data: the images of the SCN split (``data.scn_split``), ``doersch.grids_per_image`` grids
per image sampled once with ``doersch.seed``, 8 pairs each (:class:`GridPairs`); the
held-out split (``data.eval_test_split``) gives the held-out accuracy of every epoch
(chance: 1/8). When the scope leaves a frozen trunk (``fc``, ``fc+conv5``) the
colour-treated patches go through the trunk once, into ``<paths.train>/doersch_<split>.h5``
(:func:`trunk_cache`, reused while its provenance matches), and epochs run only the head
and the classifier; with scope ``all`` every batch is cropped from the images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from pipeline.config import to_dict
from pipeline.errors import DataError
from pipeline.io import atomic_path
from pipeline.provenance import code_version, sha256_file
from pipeline.train.config import DoerschConfig, TrainConfig
from pipeline.train.data import plain_attr
from pipeline.train.distributed import DistInfo, all_reduce, barrier, dist_info
from pipeline.train.loop import FitResult
from pipeline.train.methods.base import BatchLoss, Method, autocast
from pipeline.train.model import BottomStream, bottom_stream_payload, write_trained
from pipeline.train.patch_grid import N_POSITIONS, Geometry, PairTable, apply_color, pair_table

if TYPE_CHECKING:
    from pipeline.artifacts import PathsConfig
    from pipeline.backbones.config import NetworkConfig
    from pipeline.data.voc import DatasetRef

log = logging.getLogger(__name__)

EVAL_BATCH = 256
CACHE_BATCH = 64  # patches per trunk forward pass while building the trunk cache
CACHE_FORMAT = "doersch-trunk/1"
# the checkpoint continues only the run of the same backbone, weights, scope and samples
RESUME_PROVENANCE = ("backbone", "weights_sha256", "scope", "source", "doersch", "train_pairs")

Source = Literal["trunk", "image"]


# ----------------------------------------------------------------------------- model


class RelativePosition(BottomStream):
    """The shared bottom stream (frozen ``trunk`` + trainable ``head``) applied to both
    patches, h1 of the pair concatenated, fc layers of ``hidden`` sizes with ReLUs, and
    the 8-way classifier.

    ``forward(a, b, from_trunk)``: ``a`` the first (centre) patches, ``b`` the second;
    trunk output rows when ``from_trunk``, else normalised images (B, 3, S, S). ``bn`` and
    ``dropout`` rule the head's train mode as in the SCN (``train.bn``, ``train.dropout``).
    """

    def __init__(
        self,
        trunk: nn.Module,
        head: nn.Module,
        feature_dim: int,
        hidden: Sequence[int] = (4096, 4096),
        bn: str = "frozen",
        dropout: bool = False,
    ):
        super().__init__(trunk, head, bn, dropout)
        layers: list[nn.Module] = []
        dim = 2 * feature_dim  # [h1(a), h1(b)]
        for size in hidden:
            layers += [nn.Linear(dim, size), nn.ReLU(inplace=True)]
            dim = size
        layers.append(nn.Linear(dim, N_POSITIONS))
        self.classifier = nn.Sequential(*layers)

    def forward(self, a: torch.Tensor, b: torch.Tensor, from_trunk: bool = True) -> torch.Tensor:
        h = self.bottom(torch.cat([a, b]), from_trunk)  # (2B, D): one pass, shared weights
        h_a, h_b = h.chunk(2)  # (B, D), (B, D)
        return self.classifier(torch.cat([h_a, h_b], dim=1))  # (B, 8) logits


# ----------------------------------------------------------------------------- data


class ImageCrops:
    """Normalised, colour-treated crops of the patches of a :class:`PairTable`, from the
    image files (each image decoded once per call, the last ``cache`` kept).

    The colour noise of patch p comes from a generator seeded with (``seed``, p), so a
    patch's crop is the same whatever batch it is in and whichever process reads it.
    """

    def __init__(
        self,
        table: PairTable,
        files: Mapping[str, Path],
        sizes: Mapping[str, tuple[int, int]],
        crop: tuple[int, Sequence[float], Sequence[float]],
        color: str,
        seed: int,
        cache: int = 16,
    ):
        missing = [i for i in table.image_ids if i not in files]
        if missing:
            raise ValueError(f"image files: no file for {len(missing)} ids (e.g. {missing[0]!r})")
        self.table, self.files, self.sizes = table, dict(files), dict(sizes)
        self.size, self.mean, self.std = int(crop[0]), tuple(crop[1]), tuple(crop[2])
        self.color, self.seed, self.cache = color, seed, cache
        self._decoded: OrderedDict[str, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_decoded"] = OrderedDict()  # decoded images stay in their process
        return state

    def _image(self, image_id: str) -> np.ndarray:
        from pipeline.data.voc import load_rgb

        if image_id in self._decoded:
            self._decoded.move_to_end(image_id)
            return self._decoded[image_id]
        path = Path(self.files[image_id])
        arr = load_rgb(path)  # (H, W, 3) uint8
        want = tuple(self.sizes[image_id])
        if (arr.shape[1], arr.shape[0]) != want:
            raise DataError(
                path,
                f"image is {arr.shape[1]}x{arr.shape[0]} but its annotation says "
                f"{want[0]}x{want[1]} (the grids were sampled for that size)",
                "size_mismatch",
            )
        self._decoded[image_id] = arr
        while len(self._decoded) > self.cache:
            self._decoded.popitem(last=False)
        return arr

    def __call__(self, patches: np.ndarray) -> torch.Tensor:
        """Patches ``patches`` (B,) -> (B, 3, S, S) normalised crops."""
        from pipeline.backbones.preprocess import crop_resize, normalize

        t = self.table
        out = torch.empty((len(patches), 3, self.size, self.size))
        image_of = t.patch_image[patches]
        for img in np.unique(image_of):
            where = np.flatnonzero(image_of == img)
            image = self._image(t.image_ids[img])
            boxes = t.patch_box[patches[where]]  # (K, 4)
            out[torch.as_tensor(where)] = torch.from_numpy(crop_resize(image, boxes, self.size))
        for i, p in enumerate(patches):  # the colour precaution, per patch
            gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(p))
            keep = torch.as_tensor(t.patch_keep[p : p + 1])  # (1,)
            out[i : i + 1] = apply_color(out[i : i + 1], self.color, keep, self.mean, gen)
        return normalize(out, self.mean, self.std)  # (B, 3, S, S)


class GridPairs(Dataset):
    """The pairs of one split; ``ds[[k1, k2, ...]]`` is a batch: ``a`` (the centre
    patches) and ``b`` (their neighbours) (B, ...) float32, trunk rows or normalised crops
    (B, 3, S, S); ``label`` (B,) int64 in 0..7; ``index`` (B,) int64.

    ``source="trunk"`` reads the trunk cache ``trunk_path`` (dataset ``trunk`` (P, ...),
    one row per patch), in memory when it fits ``preload_max_mb``; ``source="image"``
    crops the images (each patch of the batch once).
    """

    def __init__(
        self,
        table: PairTable,
        crops: ImageCrops,
        source: Source = "image",
        trunk_path: Path | None = None,
        preload_max_mb: int = 2048,
    ):
        if source not in ("trunk", "image"):
            raise ValueError(f"source: {source!r} is not a valid choice; allowed: trunk, image")
        if source == "trunk" and trunk_path is None:
            raise ValueError("source='trunk' needs the trunk cache's path")
        self.table, self.crops, self.source = table, crops, source
        self.trunk_path = Path(trunk_path) if trunk_path is not None else None
        self.preload_max_bytes = int(preload_max_mb) * 2**20
        self._fh: h5py.File | None = None
        self._trunk = None
        self.input_shape: tuple[int, ...] = (3, crops.size, crops.size)
        if source == "trunk":
            with h5py.File(self.trunk_path, "r") as fh:
                shape = tuple(fh["trunk"].shape)
            if shape[0] != table.n_patches:
                raise DataError(
                    self.trunk_path, f"trunk has {shape[0]} rows; allowed: {table.n_patches}"
                )
            self.input_shape = shape[1:]

    def __len__(self) -> int:
        return len(self.table)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()  # the h5py handle and arrays do not cross processes
        state["_fh"], state["_trunk"] = None, None
        return state

    def _trunk_rows(self, rows: np.ndarray) -> np.ndarray:
        if self._trunk is None:
            self._fh = h5py.File(self.trunk_path, "r")
            ds = self._fh["trunk"]
            nbytes = int(np.prod(ds.shape)) * 4
            self._trunk = np.asarray(ds[:], np.float32) if nbytes <= self.preload_max_bytes else ds
        if isinstance(self._trunk, np.ndarray):
            return self._trunk[rows]
        return np.asarray(self._trunk[rows], dtype=np.float32)  # rows increasing (np.unique)

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        idx = np.atleast_1d(np.asarray(index, dtype=np.int64))  # (B,)
        first, second = self.table.first[idx], self.table.second[idx]  # (B,), (B,)
        patches, inverse = np.unique(np.concatenate([first, second]), return_inverse=True)
        if self.source == "trunk":
            x = torch.from_numpy(self._trunk_rows(patches))  # (U, ...)
        else:
            x = self.crops(patches)  # (U, 3, S, S)
        x = x[torch.from_numpy(inverse)]  # (2B, ...)
        return {
            "a": x[: len(idx)],  # (B, ...) the centre patches
            "b": x[len(idx) :],  # (B, ...) their neighbours
            "label": torch.from_numpy(self.table.labels[idx]),  # (B,)
            "index": torch.from_numpy(idx),
        }

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh, self._trunk = None, None

    def describe(self) -> dict[str, Any]:
        return {
            "pairs": len(self),
            "patches": self.table.n_patches,
            "images": len(self.table.image_ids),
            "source": self.source,
            "input_shape": list(self.input_shape),
        }


def table_sha256(table: PairTable) -> str:
    """A hash of the sampled grids and pairs (image ids, boxes, kept channels, pairs)."""
    h = hashlib.sha256()
    h.update(json.dumps(list(table.image_ids)).encode())
    for arr in (table.patch_image, table.patch_box, table.patch_keep, table.first,
                table.second, table.labels):  # fmt: skip
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def images_sha256(files: Sequence[Path]) -> str:
    """A hash of the image files' contents, in order (a regenerated dataset with the same
    ids and sizes invalidates the trunk cache)."""
    h = hashlib.sha256()
    for f in files:
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def _cache_attrs(path: Path) -> dict[str, Any] | None:
    try:
        with h5py.File(path, "r") as fh:
            return {k: plain_attr(v) for k, v in fh.attrs.items()}
    except OSError:
        return None


@torch.no_grad()
def trunk_cache(
    path: Path,
    crops: ImageCrops,
    trunk: nn.Module,
    expected: dict[str, Any],
    device: torch.device,
) -> bool:
    """Make ``path`` hold the trunk output of every patch of ``crops.table``: dataset
    ``trunk`` (P, ...) float32, with ``patch_image``, ``patch_box``, ``first``, ``second``,
    ``labels`` beside it and ``expected`` as attributes (JSON-encoded values). Reused when
    its attributes equal ``expected``; returns whether it was built."""
    path = Path(path)
    want = {k: json.dumps(v, sort_keys=True) for k, v in expected.items()}
    have = _cache_attrs(path) if path.is_file() else None
    if have is not None and all(have.get(k) == v for k, v in want.items()):
        log.info("%s: trunk cache hit (%d patches)", path, crops.table.n_patches)
        return False
    table = crops.table
    trunk = trunk.to(device).eval()
    n = table.n_patches
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        ds = None
        # patches are stored image by image, so each batch decodes few images
        for s in tqdm(range(0, n, CACHE_BATCH), desc=f"trunk cache {path.name}", leave=False):
            rows = np.arange(s, min(n, s + CACHE_BATCH))
            y = trunk(crops(rows).to(device)).float().cpu().numpy()  # (B, ...)
            if ds is None:
                ds = fh.create_dataset("trunk", shape=(n, *y.shape[1:]), dtype="float32",
                                       chunks=(min(n, CACHE_BATCH), *y.shape[1:]))  # fmt: skip
            ds[s : s + len(rows)] = y
        if ds is None:
            fh.create_dataset("trunk", shape=(0,), dtype="float32")
        for name in ("patch_image", "patch_box", "first", "second", "labels"):
            fh[name] = getattr(table, name)
        for k, v in want.items():
            fh.attrs[k] = v
        fh.attrs["code_version"] = code_version()
    log.info("%s: cached the trunk output of %d patches", path, n)
    return True


# ----------------------------------------------------------------------------- method


@torch.no_grad()
def evaluate(
    model: RelativePosition,
    ds: GridPairs,
    device: torch.device,
    info: DistInfo | None = None,
    amp: bool = False,
) -> dict[str, float]:
    """Mean cross-entropy and accuracy over every pair of ``ds`` (each process a shard)."""
    info = info or DistInfo()
    was_training = model.training
    model.eval()
    from_trunk = ds.source == "trunk"
    idx = np.arange(info.rank, len(ds), info.world_size)
    total = torch.zeros(3, dtype=torch.float64, device=device)  # (loss sum, correct, count)
    for start in range(0, len(idx), EVAL_BATCH):
        batch = ds[idx[start : start + EVAL_BATCH]]
        a, b, label = (batch[k].to(device) for k in ("a", "b", "label"))
        with autocast(device, amp):
            logits = model(a, b, from_trunk).float()  # (B, 8)
        loss = F.cross_entropy(logits, label, reduction="sum")
        correct = (logits.argmax(1) == label).sum()
        count = torch.tensor(len(label), device=device, dtype=torch.float64)
        total += torch.stack([loss.double(), correct.double(), count])
    all_reduce(info, total)
    model.train(was_training)
    n = float(total[2].clamp(min=1))
    return {"loss": float(total[0]) / n, "accuracy": float(total[1]) / n}


class DoerschMethod(Method):
    """Classify the second patch's position relative to the first (8 classes).

    ``backbone``, ``scope`` and ``provenance`` are needed only to write ``model.pt``
    (:meth:`save_trained`; :func:`build_method` sets them).
    """

    name: ClassVar[str] = "Doersch"
    resume_provenance: ClassVar[tuple[str, ...]] = RESUME_PROVENANCE
    record_keys: ClassVar[tuple[str, ...]] = ("test_loss", "test_accuracy")
    loss_label: ClassVar[str] = "cross-entropy per pair"
    select_key: ClassVar[str] = "test_accuracy"  # train.select: best keeps the most accurate
    select_mode: ClassVar[Literal["max", "min"]] = "max"

    def __init__(
        self,
        model: RelativePosition,
        train_set: GridPairs,
        test_set: GridPairs,
        cfg: DoerschConfig,
        *,
        backbone=None,
        scope: str | None = None,
        provenance: dict[str, Any] | None = None,
    ):
        self.model, self.train_set, self.test_set, self.cfg = model, train_set, test_set, cfg
        self.backbone, self.scope, self.provenance = backbone, scope, provenance
        self.from_trunk = train_set.source == "trunk"

    @property
    def reduction(self) -> Literal["sum", "mean"]:
        return "mean"

    def param_groups(self, cfg: TrainConfig) -> list[dict[str, Any]]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return [{"params": params, "lr": cfg.lr}]  # doersch.lr: run_train puts it in cfg

    def warmup_frozen(self) -> list[tuple[str, nn.Parameter]]:
        """The shared bottom stream's trainable head: during ``train.context_warmup_epochs``
        only the classifier learns, so h1 starts moving once the classifier carries signal
        (the same warm-up as the SCN's context module)."""
        return [(f"head.{n}", p) for n, p in self.model.head.named_parameters() if p.requires_grad]

    def on_epoch_start(self, epoch: int) -> None:
        self.model.check_frozen()

    def forward(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return net(batch["a"], batch["b"], self.from_trunk)  # (B, 8) logits

    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> BatchLoss:
        label = batch["label"]  # (B,)
        loss = F.cross_entropy(out.float(), label)  # (), mean over the pairs
        n = len(label)
        return BatchLoss(loss, loss.detach() * n, n)

    def evaluate(self, device: torch.device, info: DistInfo, amp: bool) -> dict[str, float]:
        test = evaluate(self.model, self.test_set, device, info, amp)
        return {"test_loss": test["loss"], "test_accuracy": test["accuracy"]}

    def describe(self, record: dict[str, float]) -> str:
        return (
            f"test {record['test_loss']:.4g}, accuracy {100 * record['test_accuracy']:.1f}% "
            f"(chance {100 / N_POSITIONS:.1f}%)"
        )

    def baseline(self) -> tuple[str, float]:
        return "chance: ln 8", math.log(N_POSITIONS)

    def save_trained(
        self, path: Path, config: dict[str, Any], history: list[dict[str, float]]
    ) -> None:
        if self.backbone is None or self.scope is None or self.provenance is None:
            raise ValueError("DoerschMethod.save_trained needs the backbone, scope and provenance")
        model = self.model.cpu()
        payload = {
            **bottom_stream_payload(self.backbone, self.scope, model, "doersch"),
            "classifier_hidden": list(self.cfg.hidden),
            "classifier": {
                k: v.detach().cpu().clone() for k, v in model.classifier.state_dict().items()
            },
            "config": config,
            "provenance": self.provenance,
            "history": history,
        }
        write_trained(path, payload)

    def metrics(self, result: FitResult) -> dict[str, Any]:
        last = result.history[-1]
        return {
            "train_loss": last["train_loss"],
            "test_loss": last["test_loss"],
            "test_accuracy": last["test_accuracy"],
            "chance_accuracy": 1.0 / N_POSITIONS,
            "chance_loss": math.log(N_POSITIONS),
            "train_pairs": len(self.train_set),
            "test_pairs": len(self.test_set),
            "train_images": len(self.train_set.table.image_ids),
            "test_images": len(self.test_set.table.image_ids),
            "source": self.train_set.source,
        }


# ----------------------------------------------------------------------------- stage


def geometry(cfg: DoerschConfig) -> Geometry:
    return Geometry(cfg.patch, cfg.gap, cfg.jitter, tuple(cfg.image_pixels))


def build_method(
    dataset_ref: DatasetRef,
    backbone: str,
    net: NetworkConfig,
    cfg: TrainConfig,
    dcfg: DoerschConfig,
    splits: tuple[str, str],
    paths: PathsConfig,
) -> DoerschMethod:
    """Doersch's task on the images of ``splits[0]`` (the SCN split), ``splits[1]`` held
    out; the bottom stream starts from ``backbone``'s weights with ``net.scope`` trained.
    Builds (rank 0) or reuses the trunk caches when the scope leaves a frozen trunk."""
    from pipeline.backbones import build_backbone
    from pipeline.data.images import check_scn_images, open_scn_split
    from pipeline.devices import resolve_device

    info = dist_info()
    scope = net.scope
    bb = build_backbone(backbone, net.weights, True, net.input_size)
    trunk, head = bb.split(scope)
    source: Source = "image" if scope == "all" else "trunk"
    crop = (bb.input_size, bb.mean, bb.std)
    geom = geometry(dcfg)
    sets, shas = [], []
    for split in splits:
        ds = open_scn_split(dataset_ref, split, stage="train")  # data.scn_images when set
        check_scn_images(dataset_ref, ds, ds.ids, paths.scn_images_manifest)
        if len(ds) == 0:
            raise DataError(ds.root, f"split {split!r} has no images to sample pairs from")
        images = [(im.id, im.width, im.height) for im in ds]
        table = pair_table(images, dcfg.grids_per_image, geom, dcfg.color, dcfg.seed)
        crops = ImageCrops(
            table,
            {im.id: im.path for im in ds},
            {im.id: (im.width, im.height) for im in ds},
            crop,
            dcfg.color,
            dcfg.seed,
        )
        sha = table_sha256(table)
        cache = paths.doersch_trunk_file(split) if source == "trunk" else None
        if cache is not None:
            expected = {
                "format": CACHE_FORMAT,
                "backbone": bb.name,
                "weights_sha256": bb.weights_sha256,
                "scope": scope,
                "trunk_layer": bb.trunk_layer(scope),
                "input_size": bb.input_size,
                "mean": list(bb.mean),
                "std": list(bb.std),
                "pairs_sha256": sha,
                "images_sha256": images_sha256([crops.files[i] for i in table.image_ids]),
                "color": dcfg.color,
                "seed": dcfg.seed,
            }
            if info.is_main:
                device = resolve_device(cfg.device, "train.device", info.local_rank)
                trunk_cache(cache, crops, trunk, expected, device)
                trunk.cpu()
            barrier(info)
        sets.append(GridPairs(table, crops, source, cache, cfg.preload_max_mb))
        shas.append(sha)
    train_set, test_set = sets
    log.info("train: %s; test: %s", train_set.describe(), test_set.describe())
    model = RelativePosition(trunk, head, bb.feature_dim, dcfg.hidden, cfg.bn, cfg.dropout)
    provenance = {
        "backbone": bb.name,
        "weights_sha256": bb.weights_sha256,
        "weights_path": bb.weights_path,
        "scope": scope,
        "source": source,
        "doersch": to_dict(dcfg),
        "train_pairs": shas[0],
        "test_pairs": shas[1],
        "code_version": code_version(),
    }
    return DoerschMethod(model, train_set, test_set, dcfg, backbone=bb, scope=scope,
                         provenance=provenance)  # fmt: skip
