"""Pair manifests: offsets, the pairing policy, de-duplication, seeding, the stage."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.boxes import box_iou, corner_offsets, corners
from pipeline.config import ConfigError, build
from pipeline.errors import DataError
from pipeline.pairs.config import PairsConfig
from pipeline.pairs.manifest import (
    build_manifest,
    read_manifest,
    select_pairs,
)
from pipeline.params import Params
from pipeline.proposals.base import ProposalSet
from pipeline.proposals.store import write_proposals
from pipeline.runner import declared_params, stage_script


def grid_boxes(n: int, size: float = 10.0, step: float = 20.0) -> np.ndarray:
    """``n`` disjoint boxes on a row (IoU 0 between any two)."""
    return np.array([[k * step, 0, k * step + size, size] for k in range(n)], dtype=np.float32)


def pset(boxes: list[np.ndarray], size=(200, 100), method="bbox") -> ProposalSet:
    n = len(boxes)
    return ProposalSet(
        image_ids=[f"im{k}" for k in range(n)],
        image_sizes=np.array([size] * n, dtype=np.int32),
        boxes=boxes,
        scores=[np.linspace(1, 0.5, len(b)) for b in boxes],
        provenance={"method": method},
    )


def cfg(**kw) -> PairsConfig:
    return build(PairsConfig, {"max_iou": 1.0, **kw}, "pairs")


def test_offsets_hand_case_corners_and_scaling():
    top = np.array([[10, 20, 50, 60]], np.float32)
    bottom = np.array([[0, 0, 20, 30]], np.float32)
    assert corners(top).tolist() == [[10, 20, 50, 20, 10, 60, 50, 60]]  # TL, TR, BL, BR
    px = corner_offsets(top, bottom, 100, 200, "none")
    assert px.tolist() == [[10, 20, 30, 20, 10, 30, 30, 30]]  # b_i - b_j, top minus bottom
    scaled = corner_offsets(top, bottom, 100, 200, "image")
    np.testing.assert_allclose(scaled, [[0.1, 0.1, 0.3, 0.1, 0.1, 0.15, 0.3, 0.15]], rtol=1e-6)
    assert scaled.dtype == np.float32
    # sign: swapping top and bottom negates the offset
    np.testing.assert_allclose(corner_offsets(bottom, top, 100, 200, "image"), -scaled)


def test_manifest_offsets_follow_top_minus_bottom_in_the_file_frame():
    boxes = np.array([[0, 0, 20, 10], [100, 50, 140, 90]], np.float32)
    m = build_manifest(pset([boxes], size=(200, 100)), cfg(ordered=False))
    assert len(m.top) == 1
    assert m.patch_box[m.top[0]].tolist() == [
        0,
        0,
        20,
        10,
    ]  # unordered: the better-scoring patch is the top
    np.testing.assert_allclose(m.offset[0], [-0.5, -0.5, -0.6, -0.5, -0.5, -0.8, -0.6, -0.8])


def test_box_iou_hand_values():
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    iou = box_iou(b, b)
    assert iou[0, 1] == pytest.approx(50 / 150)
    assert iou[0, 2] == 0 and iou[1, 1] == pytest.approx(1.0)


def test_iou_filter_keeps_pairs_inside_the_range():
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [50, 50, 60, 60]], np.float32)  # IoU(0,1)=1/3
    rng = np.random.default_rng(0)
    top, bottom, iou = select_pairs(b, cfg(max_iou=0.2), rng)
    assert {(int(i), int(j)) for i, j in zip(top, bottom, strict=True)} == {
        (0, 2),
        (2, 0),
        (1, 2),
        (2, 1),
    }
    top, bottom, iou = select_pairs(b, cfg(min_iou=0.3, max_iou=0.5), rng)
    assert {(int(i), int(j)) for i, j in zip(top, bottom, strict=True)} == {(0, 1), (1, 0)}
    assert np.allclose(iou, 1 / 3)


def test_min_above_max_iou_is_refused():
    with pytest.raises(ConfigError, match=r"pairs.min_iou"):
        build(PairsConfig, {"min_iou": 0.6, "max_iou": 0.5}, "pairs")


def test_ordered_vs_unordered_counts():
    b = grid_boxes(5)
    rng = np.random.default_rng(0)
    top, bottom, _ = select_pairs(b, cfg(ordered=True, max_pairs_per_image=100), rng)
    assert len(top) == 20 and len(set(zip(top.tolist(), bottom.tolist(), strict=True))) == 20
    top, bottom, _ = select_pairs(b, cfg(ordered=False, max_pairs_per_image=100), rng)
    assert len(top) == 10 and np.all(top < bottom)


def test_symmetric_doubles_unordered_pairs():
    b = grid_boxes(4)
    top, bottom, _ = select_pairs(b, cfg(ordered=False, symmetric=True), np.random.default_rng(0))
    pairs = set(zip(top.tolist(), bottom.tolist(), strict=True))
    assert len(top) == 12 and all((j, i) in pairs for i, j in pairs)


def test_max_pairs_per_image_samples_distinct_pairs():
    m = build_manifest(pset([grid_boxes(6)] * 3), cfg(max_pairs_per_image=5))
    assert len(m.top) == 15
    for k in range(3):
        sel = m.patch_image[m.top] == k
        assert len(set(zip(m.top[sel].tolist(), m.bottom[sel].tolist(), strict=True))) == 5
    # every patch in the table is used, and belongs to the image of its pairs
    used = np.union1d(m.top, m.bottom)
    assert used.tolist() == list(range(len(m.patch_box)))
    assert np.all(m.patch_image[m.top] == m.patch_image[m.bottom])


def test_same_seed_same_manifest_other_seed_differs():
    props = pset([grid_boxes(8)] * 4)
    a = build_manifest(props, cfg(max_pairs_per_image=6, seed=3))
    b = build_manifest(props, cfg(max_pairs_per_image=6, seed=3))
    c = build_manifest(props, cfg(max_pairs_per_image=6, seed=4))
    for x, y in (
        (a.top, b.top),
        (a.bottom, b.bottom),
        (a.offset, b.offset),
        (a.patch_box, b.patch_box),
    ):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.patch_box[a.top], c.patch_box[c.top]) or not np.array_equal(
        a.patch_box[a.bottom], c.patch_box[c.bottom]
    )


def test_duplicates_removed_and_images_under_two_patches_skipped():
    b = grid_boxes(3)
    dup = np.concatenate([b, b[:2]])  # 5 rows, 3 distinct
    single = grid_boxes(1)
    same_twice = np.concatenate([single, single])  # dedupes to 1 patch
    degenerate = np.array([[5, 5, 5, 9], [0, 0, 4, 4]], np.float32)  # one zero-width box
    empty = np.zeros((0, 4), np.float32)
    m = build_manifest(pset([dup, single, same_twice, degenerate, empty]), cfg())
    assert m.image_ids == ["im0"]
    assert len(m.patch_box) == 3 and len(np.unique(m.patch_box, axis=0)) == 3
    assert len(m.top) == 6
    assert m.counts["images_skipped_lt2_patches"] == 4
    assert m.counts["duplicate_boxes"] == 3
    assert m.counts["degenerate_boxes"] == 1
    assert m.metrics()["images"] == 1 and m.metrics()["pairs_per_image"] == 6


def test_images_whose_pairs_all_fail_the_iou_filter_are_counted():
    overlapping = np.array([[0, 0, 10, 10], [1, 0, 11, 10]], np.float32)  # IoU 0.82
    m = build_manifest(pset([overlapping, grid_boxes(2)]), cfg(max_iou=0.5))
    assert m.counts["images_without_pairs"] == 1 and m.image_ids == ["im1"]
    assert m.metrics()["share_iou_below_0.2"] == 1.0


def make_params(tmp_path: Path, **pairs) -> Params:
    return build(
        Params,
        {
            "proposal": "bbox",
            "paths": {
                "proposals": str(tmp_path / "proposals"),
                "pairs": str(tmp_path / "pairs"),
                "metrics": str(tmp_path / "metrics"),
            },
            "pairs": {"max_iou": 1.0, **pairs},
        },
    )


def test_stage_writes_manifests_in_the_artifact_format(tmp_path):
    params = make_params(tmp_path, max_pairs_per_image=4)
    train = pset([grid_boxes(4), grid_boxes(1), grid_boxes(3)])
    test = pset([grid_boxes(2)] * 2)
    write_proposals(tmp_path / "proposals" / "train.h5", train, {"dataset": "scenes"})
    write_proposals(tmp_path / "proposals" / "test.h5", test, {"dataset": "scenes"})
    metrics = stage_script("pairs")(params)
    assert metrics["method"] == "bbox"
    tr = metrics["splits"]["train"]
    assert tr["images"] == 2 and tr["images_skipped_lt2_patches"] == 1 and tr["pairs"] == 4 + 4
    assert metrics["splits"]["test"]["pairs"] == 4
    path = tmp_path / "pairs" / "train.h5"
    with h5py.File(path, "r") as fh:
        assert fh["patches/image_index"].dtype == np.int32
        assert fh["patches/box"].dtype == np.float32 and fh["patches/box"].shape[1] == 4
        assert fh["pairs/top"].dtype == np.int64 and fh["pairs/bottom"].dtype == np.int64
        assert fh["pairs/offset"].shape == (8, 8) and fh["pairs/offset"].dtype == np.float32
        assert fh["image_sizes"].dtype == np.int32
        assert fh.attrs["offset_scale"] == "image"
        assert fh.attrs["source_proposals"] == "bbox"
        assert fh.attrs["created_by"] == "pairs"
        assert len(fh.attrs["proposals_sha256"]) == 64
        recorded = json.loads(fh.attrs["params"])  # exactly what dvc.yaml says pairs reads
        assert list(recorded) == sorted(declared_params("pairs"))
        assert recorded["pairs.max_pairs_per_image"] == 4
        assert recorded["proposal"] == params.proposal
    m = read_manifest(path)
    assert m.image_ids == ["im0", "im2"]
    assert not list((tmp_path / "pairs").glob("*.tmp-*"))  # atomic: no temporaries left


def test_stage_refuses_stale_or_pairless_proposals(tmp_path):
    params = make_params(tmp_path)
    write_proposals(tmp_path / "proposals" / "train.h5", pset([grid_boxes(3)], method="random"))
    with pytest.raises(DataError, match=r"train.h5.*method is 'random'"):
        stage_script("pairs")(params)
    write_proposals(tmp_path / "proposals" / "train.h5", pset([grid_boxes(1)] * 3))
    with pytest.raises(DataError, match=r"train.h5: no pairs"):
        stage_script("pairs")(params)
    assert not (tmp_path / "pairs" / "train.h5").exists()
