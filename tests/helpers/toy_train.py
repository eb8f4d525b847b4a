"""Tiny pairs manifests and target caches in the documented formats, for the train tests.

Imported by tests/test_train_*.py; its self-check is in tests/test_train_helpers.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from pipeline.train.config import TrainConfig
from pipeline.train.data import PairDataset
from pipeline.train.model import SCN

TRUNK_DIM, TARGET_DIM = 16, 10
DIRECTIONS = np.array(
    [[-0.5, 0.0], [0.5, 0.0], [0.0, -0.5], [0.0, 0.5]], dtype=np.float32
)  # left, right, up, down: (dx, dy) of the top patch relative to the bottom one


def write_pairs(
    path: Path,
    image_ids: list[str],
    image_sizes: np.ndarray,
    patch_image: np.ndarray,
    patch_box: np.ndarray,
    top: np.ndarray,
    bottom: np.ndarray,
    offset: np.ndarray,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        fh.create_dataset("image_ids", data=np.array(image_ids, dtype=object),
                          dtype=h5py.string_dtype())  # fmt: skip
        fh["image_sizes"] = np.asarray(image_sizes, dtype=np.int32)
        fh["patches/image_index"] = np.asarray(patch_image, dtype=np.int32)
        fh["patches/box"] = np.asarray(patch_box, dtype=np.float32)
        fh["pairs/top"] = np.asarray(top, dtype=np.int64)
        fh["pairs/bottom"] = np.asarray(bottom, dtype=np.int64)
        fh["pairs/offset"] = np.asarray(offset, dtype=np.float32)
        fh.attrs["offset_scale"] = "image"
        fh.attrs["source_proposals"] = "bbox"
        fh.attrs["created_by"] = "test"
    return path


def write_targets(path: Path, features: np.ndarray, trunk: np.ndarray | None, **attrs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        fh.create_dataset("features", data=features, chunks=(min(8, len(features)),
                          features.shape[1]), compression="gzip")  # fmt: skip
        if trunk is not None:
            fh["trunk"] = trunk
        for k, v in attrs.items():
            fh.attrs[k] = v
    return path


def toy_offset_split(root: Path, n_images: int, seed: int, noise: float = 0.0) -> tuple[Path, Path]:
    """A problem only the offset solves: one bottom patch per image, four top patches
    around it (left, right, up, down) whose targets depend only on the direction, plus
    Gaussian ``noise`` of that std per top patch (a split to overfit on)."""
    rng = np.random.default_rng(seed)
    direction_targets = np.random.default_rng(1234).normal(size=(4, TARGET_DIM)).astype(np.float32)
    patch_image, boxes, features, trunk, top, bottom, offset = [], [], [], [], [], [], []
    for img in range(n_images):
        j = len(boxes)
        patch_image.append(img)
        boxes.append([40, 40, 60, 60])
        features.append(rng.normal(size=TARGET_DIM))
        trunk.append(rng.normal(size=TRUNK_DIM))
        for d, (dx, dy) in enumerate(DIRECTIONS):
            i = len(boxes)
            patch_image.append(img)
            boxes.append([40 + 100 * dx, 40 + 100 * dy, 60 + 100 * dx, 60 + 100 * dy])
            target = direction_targets[d]
            if noise:  # drawn only then: the noiseless splits stay as they were
                target = target + noise * rng.normal(size=TARGET_DIM)
            features.append(target)
            trunk.append(rng.normal(size=TRUNK_DIM))
            top.append(i)
            bottom.append(j)
            offset.append(np.tile([dx, dy], 4))  # (8,) every corner moves alike
    pairs = write_pairs(
        root / "pairs.h5",
        [f"{k:06d}" for k in range(n_images)],
        np.full((n_images, 2), 100),
        np.array(patch_image),
        np.array(boxes),
        np.array(top),
        np.array(bottom),
        np.array(offset),
    )
    targets = write_targets(
        root / "targets.h5",
        np.array(features, dtype=np.float32),
        np.array(trunk, dtype=np.float32),
        backbone="toy",
        scope="fc",
    )
    return pairs, targets


def toy_sets(
    tmp_path: Path, n_train: int = 32, n_test: int = 8, train_noise: float = 0.0
) -> tuple[PairDataset, PairDataset]:
    """Write the toy train/test splits under ``tmp_path`` and open them; ``train_noise``:
    the std of the noise on the training targets (the test targets have none)."""
    toy_offset_split(tmp_path / "train", n_train, seed=0, noise=train_noise)
    toy_offset_split(tmp_path / "test", n_test, seed=1)
    return open_toy_sets(tmp_path)


def open_toy_sets(root: Path) -> tuple[PairDataset, PairDataset]:
    """Open toy splits already written by :func:`toy_sets`."""
    return tuple(
        PairDataset(root / split / "pairs.h5", root / split / "targets.h5")
        for split in ("train", "test")
    )


def toy_model(hidden: int = 32, use_offset: bool = True, seed: int = 0) -> SCN:
    """A small real SCN: a frozen linear trunk, a Linear+ReLU head, the context module."""
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(TRUNK_DIM, TRUNK_DIM))
    head = nn.Sequential(nn.Linear(TRUNK_DIM, 12), nn.ReLU())
    return SCN(trunk, head, feature_dim=12, target_dim=TARGET_DIM, hidden=hidden,
               use_offset=use_offset)  # fmt: skip


def toy_config(**kw) -> TrainConfig:
    base = dict(
        seed=0, epochs=4, batch_size=16, lr=0.05, lr_step_epoch=3, lr_gamma=0.5, momentum=0.9,
        weight_decay=1e-4, hidden=32, loss="mean", device="cpu", resume=True,
    )  # fmt: skip
    base.update(kw)
    return dataclasses.replace(TrainConfig(), **base)
