"""Stage ``targets``: cache == direct forward, provenance enforced, atomic writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pipeline.backbones import build_backbone
from pipeline.backbones.preprocess import crop_resize, normalize
from pipeline.config import build
from pipeline.data.voc import VOCDataset, load_rgb
from pipeline.errors import DataError
from pipeline.params import Params
from pipeline.runner import stage_script
from pipeline.targets import cache
from tests.helpers.numeric import assert_close_rel
from tests.helpers.voc import TINY_CLASSES, write_tiny_voc

SIZE = 64


def write_pairs(path: Path, year: Path, split: str, seed: int = 0) -> None:
    """A pairs manifest in the documented format; patches shuffled across images."""
    ds = VOCDataset(year, split, classes=TINY_CLASSES)
    rng = np.random.default_rng(seed)
    index, boxes = [], []
    for k, im in enumerate(ds):
        xy = rng.uniform(0, [im.width / 2, im.height / 2])
        rand = np.concatenate([xy, xy + rng.uniform(8, [im.width / 2, im.height / 2])])
        for b in [*im.boxes(), rand]:
            index.append(k)
            boxes.append(b)
    order = rng.permutation(len(boxes))
    index, boxes = np.array(index)[order], np.array(boxes, np.float32)[order]
    top, bottom = rng.integers(0, len(boxes), 10), rng.integers(0, len(boxes), 10)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        fh.create_dataset(
            "image_ids", data=np.array(ds.ids, dtype=object), dtype=h5py.string_dtype("utf-8")
        )
        fh.create_dataset(
            "image_sizes", data=np.array([[im.width, im.height] for im in ds], np.int32)
        )
        fh.create_dataset("patches/image_index", data=index.astype(np.int32))
        fh.create_dataset("patches/box", data=boxes)
        fh.create_dataset("pairs/top", data=top.astype(np.int64))
        fh.create_dataset("pairs/bottom", data=bottom.astype(np.int64))
        fh.create_dataset("pairs/offset", data=np.zeros((10, 8), np.float32))


def make_params(root: Path, **targets) -> Params:
    return build(
        Params,
        {
            "dataset": "scenes",
            "paths": {
                "pairs": str(root / "pairs"),
                "targets": str(root / "targets"),
                "metrics": str(root / "metrics"),
            },
            "data": {"scenes_root": str(root / "scenes")},
            "scenes": {"classes": list(TINY_CLASSES)},
            "network": {"input_size": SIZE, "scope": "fc"},
            "targets": {"batch_size": 4, "workers": 0, **targets},
        },
    )


def make_project(root: Path) -> Path:
    year = write_tiny_voc(root / "scenes", n_images=4)
    for split in ("train", "test"):
        write_pairs(root / "pairs" / f"{split}.h5", year, split, seed=len(split))
    return root


def jpeg(root: Path, image_id: str) -> Path:
    return root / "scenes" / "VOCdevkit" / "SCENES" / "JPEGImages" / f"{image_id}.jpg"


@pytest.fixture(scope="module")
def backbone():
    return build_backbone("efficientnet_lite0", input_size=SIZE)


@pytest.fixture(scope="module")
def built(tmp_path_factory, backbone) -> tuple[Path, dict]:
    """One full stage run (2 DataLoader workers) shared by the read-only tests."""
    root = make_project(tmp_path_factory.mktemp("targets"))
    return root, stage_script("targets")(make_params(root, workers=2))


def direct(root: Path, split: str, bb, scope: str = "fc") -> tuple[np.ndarray, np.ndarray]:
    """Row p: patch p cropped from its own decoded image, through the whole network."""
    with h5py.File(root / "pairs" / f"{split}.h5", "r") as fh:
        ids = [s.decode() for s in fh["image_ids"][:]]
        index, boxes = fh["patches/image_index"][:], fh["patches/box"][:]
    crops = [
        crop_resize(load_rgb(jpeg(root, ids[k])), b[None], SIZE)[0]
        for k, b in zip(index, boxes, strict=True)
    ]
    x = torch.from_numpy(normalize(np.stack(crops), bb.mean, bb.std))  # (P, 3, S, S)
    trunk, _ = bb.split(scope)
    with torch.no_grad():
        return bb.features(x).numpy(), trunk(x).numpy()  # (P, D), (P, ...)


def test_cache_rows_equal_direct_forward(built, backbone) -> None:
    root, metrics = built
    assert metrics["patches"] > 0 and metrics["feature_dim"] == 1280
    assert metrics["trunk_cache_bytes"] > 0 and metrics["device"] == "cpu"
    assert metrics["patches_per_s"] > 0 and set(metrics["splits"]) == {"train", "test"}
    for split in ("train", "test"):
        feats_ref, trunk_ref = direct(root, split, backbone)
        exp = cache.expected_attrs(backbone, "fc", root / "pairs" / f"{split}.h5")
        with cache.open_targets(root / "targets" / f"{split}.h5", exp) as fh:
            feats = fh["features"][:]
            assert feats.dtype == np.float32 and feats.shape == feats_ref.shape
            assert_close_rel(feats, feats_ref)  # other batches: other kernels' rounding
            assert_close_rel(fh["trunk"][:], trunk_ref)
            assert fh["trunk"].shape[1:] == (192, 2, 2)
            assert fh["features"].compression == "gzip" and fh["features"].chunks
            assert fh.attrs["trunk_layer"] == "block14" and fh.attrs["split"] == split
            recorded = json.loads(fh.attrs["params"])  # the params dvc.yaml says targets reads
            assert recorded["targets.workers"] == 2 and recorded["backbone"] == "efficientnet_lite0"
            assert fh.attrs["n_patches"] == len(feats) == metrics["splits"][split]["patches"]


def test_provenance_mismatch_is_refused(built, backbone, tmp_path: Path) -> None:
    root, _ = built
    path = root / "targets" / "train.h5"
    exp = cache.expected_attrs(backbone, "fc", root / "pairs" / "train.h5")
    for key, value, msg in [
        ("scope", "all", "scope is 'fc' in the cache, expected 'all'"),
        ("input_size", 224, "input_size is 64 in the cache, expected 224"),
        ("weights_sha256", "", "weights_sha256 is '"),
        ("backbone", "vgg19", "backbone is 'efficientnet_lite0' in the cache, expected 'vgg19'"),
        ("mean", [0.485, 0.456, 0.406], "mean is [0.5, 0.5, 0.5]"),
        ("nonexistent", 1, "'nonexistent' is missing"),
    ]:
        with pytest.raises(DataError, match=r"provenance|another configuration") as err:
            cache.open_targets(path, {**exp, key: value})
        assert msg in str(err.value) and str(path) in str(err.value)
    # a changed manifest is detected through pairs_sha256
    pairs = tmp_path / "train.h5"
    shutil.copy(root / "pairs" / "train.h5", pairs)
    with h5py.File(pairs, "a") as fh:
        fh.attrs["touched"] = 1
    with pytest.raises(DataError, match="pairs_sha256"):
        cache.open_targets(path, cache.expected_attrs(backbone, "fc", pairs))


def test_float16_without_trunk(tmp_path: Path, backbone) -> None:
    root = make_project(tmp_path)
    patches = cache.read_patches(root / "pairs" / "train.h5")
    files = {i: jpeg(root, i) for i in patches.image_ids}
    out = root / "targets" / "train.h5"
    m = cache.build_targets(
        patches,
        files,
        out,
        backbone,
        scope="fc",
        dtype="float16",
        trunk_cache=False,
        batch_size=3,
        compression="lzf",
    )
    assert m["trunk_cache_bytes"] == 0 and m["trunk_shape"] == []
    feats_ref, _ = direct(root, "train", backbone)
    with cache.open_targets(out, {"dtype": "float16", "trunk_layer": ""}) as fh:
        assert "trunk" not in fh and fh["features"].dtype == np.float16
        # float16 rounds each value to 2^-11 of itself, at most 4.9e-4 of the scale
        assert_close_rel(fh["features"][:].astype(np.float32), feats_ref, rel=2e-3)


def test_interrupted_run_leaves_no_final_file_and_rerun_succeeds(tmp_path, monkeypatch) -> None:
    root = make_project(tmp_path)
    params = make_params(root)
    real = cache._write_rows
    calls = {"n": 0}

    def dying(ds, idx, values):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as a Ctrl-C mid-run
        real(ds, idx, values)

    monkeypatch.setattr(cache, "_write_rows", dying)
    with pytest.raises(KeyboardInterrupt):
        stage_script("targets")(params)
    out = root / "targets"
    assert not (out / "train.h5").exists()
    assert not list(out.glob("*")), "no temporary left behind"
    # a temporary left by a killed process is not a cache, and the rerun removes it
    stale = out / "train.h5.tmp-999-deadbeef"
    stale.write_bytes(b"partial")
    with pytest.raises(DataError):
        cache.open_targets(stale, {})
    monkeypatch.setattr(cache, "_write_rows", real)
    stage_script("targets")(params)
    assert sorted(p.name for p in out.iterdir()) == ["test.h5", "train.h5"]


def test_bad_manifest_and_corrupt_image(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    pairs = root / "pairs" / "train.h5"
    with h5py.File(pairs, "a") as fh:
        fh["patches/box"][0] = [10, 10, 500, 20]
    with pytest.raises(DataError, match=r"patch 0: box .* outside"):
        cache.read_patches(pairs)
    with h5py.File(pairs, "a") as fh:
        fh["patches/box"][0] = [10, 10, 20, 20]
        image_id = fh["image_ids"][0].decode()
    jpeg(root, image_id).write_bytes(b"junk")
    with pytest.raises(DataError, match=f"{image_id}.jpg: unreadable or corrupt image"):
        stage_script("targets")(make_params(root, workers=1))
    assert not (root / "targets" / "train.h5").exists()
    with pytest.raises(DataError, match="pairs manifest not found"):
        cache.read_patches(root / "pairs" / "val.h5")


def test_amp_on_the_cpu_is_bfloat16_where_supported(tmp_path: Path, backbone, caplog) -> None:
    """``targets.amp`` on the CPU: bfloat16 autocast where oneDNN has it (features within a
    few percent of float32, BENCHMARKS.md), float32 with a warning elsewhere (identical)."""
    from pipeline.devices import autocast_dtype

    root = make_project(tmp_path)
    patches = cache.read_patches(root / "pairs" / "train.h5")
    files = {i: jpeg(root, i) for i in patches.image_ids}
    out = {}
    for amp in (False, True):
        path = root / "targets" / f"amp{int(amp)}.h5"
        cache.build_targets(patches, files, path, backbone, scope="fc", batch_size=4, amp=amp)
        with h5py.File(path, "r") as fh:
            out[amp] = fh["features"][:].astype(np.float64)  # (P, D)
    dtype = autocast_dtype(torch.device("cpu"))
    if dtype is None:
        assert "no fast reduced precision" in caplog.text
        np.testing.assert_array_equal(out[True], out[False])
        return
    assert dtype == torch.bfloat16
    rel = np.linalg.norm(out[True] - out[False], axis=1) / np.linalg.norm(out[False], axis=1)
    cos = (out[True] * out[False]).sum(1) / (
        np.linalg.norm(out[True], axis=1) * np.linalg.norm(out[False], axis=1)
    )
    # bfloat16 keeps 8 bits of mantissa; through ~60 layers that is 5% of a feature's norm
    # at 96 px (BENCHMARKS.md) and ~17% on these tiny 64-px crops: close, never a copy
    assert 0 < np.median(rel) < 0.3 and cos.min() > 0.9
