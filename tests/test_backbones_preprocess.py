"""Patch cropping: geometry of the RoIAlign crop, value range, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.backbones.preprocess import crop_resize, normalize, resize_image
from tests.helpers.numeric import assert_close_rel


def _image() -> np.ndarray:
    img = np.zeros((40, 60, 3), dtype=np.uint8)
    img[10:20, 30:50] = (255, 0, 0)  # a red block: x in [30, 50), y in [10, 20)
    img[25:35, 5:15] = (0, 0, 255)  # a blue block: x in [5, 15), y in [25, 35)
    return img


def test_crop_of_a_block_is_that_block() -> None:
    boxes = np.array([[30, 10, 50, 20], [5, 25, 15, 35]], dtype=np.float32)
    out = crop_resize(_image(), boxes, 16)
    assert out.shape == (2, 3, 16, 16) and out.dtype == np.float32
    # interior samples lie inside the block; border samples blend bilinearly with the
    # pixels just outside the box (RoIAlign, aligned=True: pixel centres at +0.5)
    np.testing.assert_allclose(out[0, 0, 1:-1, 1:-1], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[0, 1:], 0.0, atol=1e-6)
    np.testing.assert_allclose(out[1, 2, 1:-1, 1:-1], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[1, :2], 0.0, atol=1e-6)
    assert out[0, 0].min() > 0.5 and out[1, 2].min() > 0.5


def test_half_covered_box_and_range() -> None:
    # box x in [20, 40): left half black, right half red
    out = crop_resize(_image(), np.array([[20, 10, 40, 20]], dtype=np.float32), 8)[0, 0]
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out[1:-1, :3], 0.0, atol=1e-6)
    np.testing.assert_allclose(out[1:-1, 5:], 1.0, atol=1e-6)
    assert np.all(np.diff(out[4]) >= 0)  # black to red, monotone


def test_resize_image_matches_full_box_and_upsamples_constant() -> None:
    img = _image()
    full = resize_image(img, 24)
    assert full.shape == (3, 24, 24)
    np.testing.assert_array_equal(full, crop_resize(img, np.array([[0, 0, 60, 40]]), 24)[0])
    flat = np.full((5, 7, 3), 128, dtype=np.uint8)
    np.testing.assert_allclose(resize_image(flat, 32), 128 / 255, atol=1e-6)


def test_empty_and_degenerate_boxes() -> None:
    assert crop_resize(_image(), np.zeros((0, 4), np.float32), 8).shape == (0, 3, 8, 8)
    with pytest.raises(ValueError, match="no area"):
        crop_resize(_image(), np.array([[5, 5, 5, 9]], dtype=np.float32), 8)
    with pytest.raises(ValueError, match="uint8"):
        crop_resize(np.zeros((4, 4)), np.array([[0, 0, 2, 2]], dtype=np.float32), 8)


def test_normalize_numpy_and_torch_agree() -> None:
    x = np.random.default_rng(0).random((2, 3, 4, 4), dtype=np.float32)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    a = normalize(x, mean, std)
    b = normalize(torch.from_numpy(x), mean, std).numpy()
    assert a.dtype == np.float32
    assert_close_rel(a, b, rel=1e-6)  # float32 rounding (x / s or x * (1 / s))
    assert_close_rel(a[:, 1], (x[:, 1] - 0.456) / 0.224, rel=1e-6)
