"""The synthetic pair generator: counts, geometry per pair type, offsets, determinism."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pipeline.boxes import corner_offsets
from pipeline.config import ConfigError, build
from pipeline.synthetic.config import SyntheticConfig
from pipeline.synthetic.generate import (
    BLACK,
    SQUARE,
    TRIANGLE,
    generate,
    read_pairs,
    write_pairs,
)
from tests.helpers.numeric import assert_close_rel

SMALL = SyntheticConfig(
    n_square=40, n_triangle=40, n_black=30, n_test=30, canvas_size=160, min_size=20,
    max_size=36, axis_tolerance=20, input_size=32, pixel_size=8,
)  # fmt: skip


@pytest.fixture(scope="module")
def pairs():
    return generate(SMALL)[0]


def centres(boxes: np.ndarray) -> np.ndarray:
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)


def test_counts_and_split(pairs):
    assert len(pairs) == 110
    assert [(pairs.kind == k).sum() for k in (SQUARE, TRIANGLE, BLACK)] == [40, 40, 30]
    assert (pairs.split == 1).sum() == 30 and (pairs.split == 0).sum() == 80
    assert pairs.top.shape == (110, 32, 32, 3) and pairs.bottom.dtype == np.uint8
    assert pairs.top_pixels.shape == (110, 8, 8, 3)
    test = pairs.subset(1)
    assert len(test) == 30 and set(np.unique(test.split)) == {1}


def test_geometry_per_pair_type(pairs):
    tol = SMALL.axis_tolerance
    d = centres(pairs.top_box) - centres(pairs.bottom_box)  # (N, 2) top minus circle
    dx, dy = np.abs(d[:, 0]), np.abs(d[:, 1])
    sq, tri, bl = (pairs.kind == k for k in (SQUARE, TRIANGLE, BLACK))
    assert (dy[sq] <= tol).all() and (dx[sq] > tol).all()  # squares: horizontal offsets
    assert (dx[tri] <= tol).all() and (dy[tri] > tol).all()  # triangles: vertical offsets
    assert (dx[bl] > tol).all() and (dy[bl] > tol).all()  # black: off-axis
    # one-sided (default): squares right of the circle, triangles above it (smaller y)
    assert (d[sq, 0] > 0).all() and (d[tri, 1] < 0).all()
    # crop boxes inside the canvas and disjoint
    for boxes in (pairs.top_box, pairs.bottom_box):
        assert (boxes >= 0).all() and (boxes <= SMALL.canvas_size).all()
    a, b = pairs.top_box, pairs.bottom_box
    apart = (
        (a[:, 2] <= b[:, 0]) | (b[:, 2] <= a[:, 0]) | (a[:, 3] <= b[:, 1]) | (b[:, 3] <= a[:, 1])
    )
    assert apart.all()


def test_offsets_are_scaled_corner_differences(pairs):
    # offset_scale none: pixels (float32 rounding relative to the offsets' scale)
    assert_close_rel(pairs.offset, corner_offsets(pairs.top_box, pairs.bottom_box, 1, 1), 1e-6)
    scaled = generate(replace(SMALL, offset_scale="image"))[0]
    assert_close_rel(scaled.offset, pairs.offset / 160, rel=1e-6)
    top = np.array([[10, 20, 30, 60]], np.float32)
    bottom = np.array([[0, 0, 10, 10]], np.float32)
    expected = np.array([[10 / 100, 20 / 200, 20 / 100, 20 / 200,
                          10 / 100, 50 / 200, 20 / 100, 50 / 200]])  # fmt: skip
    np.testing.assert_allclose(corner_offsets(top, bottom, 100, 200), expected, rtol=1e-6)


def test_patches_show_the_shapes(pairs):
    mid = slice(12, 20)
    bottom_mean = pairs.bottom.mean(axis=(1, 2, 3))
    assert (pairs.bottom[:, mid, mid].min(axis=(1, 2, 3)) > 200).all()  # circle centre white
    assert (pairs.bottom[:, 0, 0].max(axis=1) < 30).all()  # circle corners dark
    assert (bottom_mean > 60).all()
    top_mean = pairs.top.mean(axis=(1, 2, 3))
    assert (top_mean[pairs.kind == BLACK] == 0).all()
    sq, tri = top_mean[pairs.kind == SQUARE], top_mean[pairs.kind == TRIANGLE]
    assert sq.min() > tri.max()  # a square fills more of its crop than a triangle
    # triangle: apex at the top, so the top rows are darker than the bottom rows
    t = pairs.top[pairs.kind == TRIANGLE].astype(float)
    assert (t[:, 6].mean(axis=(1, 2)) < t[:, -6].mean(axis=(1, 2))).all()


def test_two_sided_puts_shapes_on_both_sides():
    p = generate(replace(SMALL, two_sided=True))[0]
    d = centres(p.top_box) - centres(p.bottom_box)
    sq, tri = p.kind == SQUARE, p.kind == TRIANGLE
    assert (d[sq, 0] > 0).any() and (d[sq, 0] < 0).any()
    assert (d[tri, 1] > 0).any() and (d[tri, 1] < 0).any()


def test_deterministic_for_a_seed(pairs):
    again = generate(SMALL)[0]
    other = generate(replace(SMALL, seed=1))[0]
    for name in ("top", "bottom", "offset", "split", "top_box"):
        np.testing.assert_array_equal(getattr(pairs, name), getattr(again, name))
    assert not np.array_equal(pairs.offset, other.offset)


def test_write_read_roundtrip(pairs, tmp_path):
    write_pairs(tmp_path / "p.h5", pairs, {"created_by": "test"})
    back = read_pairs(tmp_path / "p.h5")
    np.testing.assert_array_equal(back.top, pairs.top)
    np.testing.assert_array_equal(back.offset, pairs.offset)
    assert back.canvas_size == 160
    assert list(tmp_path.iterdir()) == [tmp_path / "p.h5"]  # no temporaries left


def test_canvases_for_the_samples_figure():
    _, canvases = generate(replace(SMALL, n_square=3, n_triangle=3, n_black=3, n_test=2), 2)
    assert len(canvases) == 6 and canvases[0].shape == (160, 160, 3)


@pytest.mark.parametrize(
    "override, key",
    [
        ({"min_size": 50, "max_size": 40}, "synthetic.min_size"),
        ({"n_test": 800}, "synthetic.n_test"),
        ({"canvas_size": 100}, "synthetic.canvas_size"),
        ({"recon_epochs": [1, 99]}, "synthetic.recon_epochs"),
        ({"optimizer": "rmsprop"}, "synthetic.optimizer"),
        ({"crop_margin": 0.9}, "synthetic.crop_margin"),
    ],
)
def test_config_rejects_bad_values(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build(SyntheticConfig, override, "synthetic")
