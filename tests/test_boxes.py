"""pipeline/boxes.py: the one numpy IoU and the one corner offset, on hand-made boxes."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.boxes import box_iou, corner_offsets, corners, pair_iou


def test_box_iou_hand_values_and_empty_sides():
    a = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 0, 0]], np.float32)
    iou = box_iou(a, b)  # (2, 3)
    assert iou.dtype == np.float64 and iou.shape == (2, 3)
    np.testing.assert_allclose(iou, [[1.0, 0.0, 0.0], [50 / 150, 0.0, 0.0]])
    assert box_iou(a, np.zeros((0, 4))).shape == (2, 0)
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)


def test_pair_iou_is_the_diagonal_of_box_iou():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, size=(20, 2))
    a = np.concatenate([xy, xy + rng.uniform(1, 30, size=(20, 2))], axis=1)
    b = a[::-1].copy()
    np.testing.assert_array_equal(pair_iou(a, b), np.diag(box_iou(a, b)))
    assert pair_iou(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0,)


def test_corner_offsets_in_pixels_and_scaled_by_the_image():
    top = np.array([[10, 20, 50, 60]], np.float32)
    bottom = np.array([[0, 0, 20, 30]], np.float32)
    assert corners(top).tolist() == [[10, 20, 50, 20, 10, 60, 50, 60]]  # TL, TR, BL, BR
    px = corner_offsets(top, bottom, 100, 200, "none")
    assert px.dtype == np.float32 and px.tolist() == [[10, 20, 30, 20, 10, 30, 30, 30]]
    np.testing.assert_allclose(corner_offsets(top, bottom, 100, 200), px / np.array([100, 200] * 4))
    with pytest.raises(ValueError, match="allowed: image, none"):
        corner_offsets(top, bottom, 100, 200, "pixels")
