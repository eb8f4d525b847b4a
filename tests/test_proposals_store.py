"""The proposals HDF5 artifact: roundtrip, CSR layout, provenance, malformed files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from pipeline.errors import DataError
from pipeline.proposals.base import ProposalSet, filter_boxes
from pipeline.proposals.store import read_proposals, write_proposals


def _set() -> ProposalSet:
    return ProposalSet(
        image_ids=["a", "bé", "c"],
        image_sizes=[(10, 20), (30, 40), (5, 5)],
        boxes=[
            np.array([[0, 0, 5, 5], [1, 2, 3, 4]], np.float32),
            np.zeros((0, 4), np.float32),
            np.array([[0.5, 0.5, 4.5, 4.5]], np.float32),
        ],
        scores=[np.array([0.9, 0.3]), np.zeros(0), np.array([1.0])],
        provenance={"method": "edgebox", "edge_source": "sobel", "thresholds": {"min_score": 0.1}},
    )


def test_roundtrip_keeps_boxes_ids_and_provenance(tmp_path):
    path = tmp_path / "train.h5"
    props = _set()
    write_proposals(path, props, {"dataset": "scenes", "split": "train", "params": {"x": [1]}})
    assert not list(tmp_path.glob("*.tmp-*"))
    back = read_proposals(path, expect_method="edgebox")
    assert back.image_ids == ["a", "bé", "c"]
    np.testing.assert_array_equal(back.image_sizes, props.image_sizes)
    for a, b in zip(back.boxes, props.boxes, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.float32
    for a, b in zip(back.scores, props.scores, strict=True):
        np.testing.assert_allclose(a, b)
    assert back.provenance["thresholds"] == {"min_score": 0.1}
    assert back.provenance["params"] == {"x": [1]}
    assert back.provenance["split"] == "train"
    assert back.provenance["weights_sha256"] == ""
    assert back.provenance["code_version"]
    with h5py.File(path) as fh:  # the documented layout, readable by plain h5py
        assert fh["boxes"].shape == (3, 4) and fh["boxes"].dtype == np.float32
        assert fh["offsets"][:].tolist() == [0, 2, 2, 3] and fh["offsets"].dtype == np.int64
        assert fh["image_sizes"].dtype == np.int32
        assert fh.attrs["method"] == "edgebox"


def test_empty_set_roundtrips(tmp_path):
    path = tmp_path / "empty.h5"
    write_proposals(path, ProposalSet(provenance={"method": "bbox"}))
    back = read_proposals(path)
    assert len(back) == 0 and back.n_boxes == 0


def test_reader_names_the_file_on_bad_input(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_proposals(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(DataError, match=r"junk.h5"):
        read_proposals(junk)
    path = tmp_path / "p.h5"
    write_proposals(path, _set())
    with pytest.raises(DataError, match="expected 'yolo'"):
        read_proposals(path, expect_method="yolo")
    with h5py.File(path, "a") as fh:
        del fh["offsets"]
        fh["offsets"] = np.array([0, 2, 1, 3], np.int64)
    with pytest.raises(DataError, match="offsets"):
        read_proposals(path)


def test_filter_boxes_applies_each_rule():
    boxes = np.array(
        [
            [0, 0, 20, 20],  # ok, score 0.5
            [0, 0, 20, 20],  # score below min
            [0, 0, 80, 20],  # aspect 4 > 3
            [0, 0, 10, 20],  # side 10 < 16
            [0, 0, 30, 30],  # ok, best score
            [5, 5, 5, 30],  # degenerate
        ],
        np.float32,
    )
    scores = np.array([0.5, 0.05, 0.9, 0.9, 0.8, 0.9], np.float32)
    b, s = filter_boxes(boxes, scores, min_score=0.1, max_aspect_ratio=3, min_size=16, max_boxes=5)
    np.testing.assert_array_equal(b, [[0, 0, 30, 30], [0, 0, 20, 20]])
    np.testing.assert_allclose(s, [0.8, 0.5])
    b, _ = filter_boxes(boxes, scores, min_score=0.1, max_aspect_ratio=3, min_size=16, max_boxes=1)
    np.testing.assert_array_equal(b, [[0, 0, 30, 30]])
