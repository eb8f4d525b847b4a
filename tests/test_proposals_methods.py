"""bbox and random proposals on the tiny VOC fixture; the method registry."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import ConfigError, build
from pipeline.data.voc import VOCDataset
from pipeline.params import Params
from pipeline.proposals.stage import PROPOSAL_METHODS, get_method
from tests.helpers.voc import TINY_CLASSES


def _params(tiny_voc, **proposals):
    return build(
        Params,
        {"data": {"scenes_root": str(tiny_voc.parent.parent)}, "proposals": proposals},
    )


def test_registry_holds_every_method_and_refuses_unknown():
    assert set(PROPOSAL_METHODS) == {"edgebox", "yolo", "bbox", "random"}
    with pytest.raises(ConfigError, match=r"proposal: 'nope'.*allowed: .*bbox"):
        get_method("nope")


def test_bbox_returns_ground_truth_in_project_convention(tiny_voc):
    ds = VOCDataset(tiny_voc, "train", TINY_CLASSES)
    props = get_method("bbox")(ds, _params(tiny_voc).proposals, "train")
    assert props.image_ids == ds.ids
    for im, b, s in zip(ds, props.boxes, props.scores, strict=True):
        np.testing.assert_array_equal(b, im.boxes())  # labels ignored, same boxes
        assert b.dtype == np.float32 and b.shape[1] == 4
        np.testing.assert_array_equal(s, np.ones(len(b)))
    assert props.provenance["method"] == "bbox"
    np.testing.assert_array_equal(props.image_sizes, [(im.width, im.height) for im in ds])


def test_random_crops_are_seeded_per_image_and_inside_the_image(tiny_voc):
    ds = VOCDataset(tiny_voc, "train", TINY_CLASSES)
    params = _params(tiny_voc, random={"n": 5, "size": 64})
    a = get_method("random")(ds, params.proposals, "train")
    for im, b in zip(ds, a.boxes, strict=True):
        assert b.shape == (5, 4) and b.dtype == np.float32
        assert (
            (b[:, :2] >= 0).all() and (b[:, 2] <= im.width).all() and (b[:, 3] <= im.height).all()
        )
        np.testing.assert_array_equal(b[:, 2] - b[:, 0], 64)  # fits: 64 < 96
        np.testing.assert_array_equal(b[:, 3] - b[:, 1], 64)
    # reversed order and a subset give the same crops per image (no dependence on order)
    ds.images = ds.images[::-1][:2]
    b2 = get_method("random")(ds, params.proposals, "train")
    for image_id, boxes in zip(b2.image_ids, b2.boxes, strict=True):
        np.testing.assert_array_equal(boxes, a.boxes[a.index(image_id)])
    other = get_method("random")(ds, _params(tiny_voc, seed=1).proposals, "train")
    assert not all(np.array_equal(x, y) for x, y in zip(other.boxes, b2.boxes, strict=True))


def test_random_crop_larger_than_image_is_clipped(tiny_voc):
    ds = VOCDataset(tiny_voc, "train", TINY_CLASSES)
    props = get_method("random")(
        ds, _params(tiny_voc, random={"n": 3, "size": 200}).proposals, "train"
    )
    for b in props.boxes:
        np.testing.assert_array_equal(b, np.tile([0, 0, 96, 96], (3, 1)))
