"""Doersch et al.'s context prediction (``method: doersch``): the grid sampler's geometry,
the colour precautions, a learnable toy case through the train stage, and model.pt read
back by load_trained like the SCN's bottom stream."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.backbones import build_backbone
from pipeline.config import ConfigError, build
from pipeline.params import Params
from pipeline.runner import stage_script
from pipeline.train.config import DoerschConfig
from pipeline.train.methods.doersch import GridPairs, ImageCrops, trunk_cache
from pipeline.train.model import load_trained
from pipeline.train.patch_grid import (
    CENTRE,
    NEIGHBOURS,
    Geometry,
    drop_colors,
    pair_table,
    project_colors,
    sample_grids,
)
from tests.helpers.numeric import assert_close_rel
from tests.helpers.voc import write_tiny_voc

pytestmark = pytest.mark.usefixtures("one_thread")
PAPER = Geometry(96.0, 48.0, 7.0, (150_000.0, 450_000.0))


def _centres(boxes: np.ndarray) -> np.ndarray:
    return np.stack([boxes[..., 0] + boxes[..., 2], boxes[..., 1] + boxes[..., 3]], -1) / 2


@pytest.mark.parametrize(("width", "height"), [(500, 375), (256, 256), (60, 90), (30, 200)])
def test_grids_keep_the_gap_bound_the_jitter_and_stay_inside_the_image(width, height):
    n = 400
    boxes, s = sample_grids(width, height, n, PAPER, np.random.default_rng(0))
    assert boxes.shape == (n, 9, 4) and s.shape == (n,)
    # every patch inside the image, square, patch / s image pixels on a side
    assert (boxes[..., :2] >= 0).all()
    assert (boxes[..., 2] <= width).all() and (boxes[..., 3] <= height).all()
    side = (boxes[..., 2:] - boxes[..., :2]) * s[:, None, None]  # (n, 9, 2) resized pixels
    np.testing.assert_allclose(side, PAPER.patch, rtol=1e-9)
    # the resized image has a pixel count in image_pixels, or is just large enough
    pixels = width * height * s**2
    fits = np.isclose(s, PAPER.footprint / min(width, height))
    in_range = (pixels >= PAPER.image_pixels[0] - 1e-6) & (pixels <= PAPER.image_pixels[1] + 1e-6)
    assert (in_range | fits).all()
    if PAPER.footprint / min(width, height) > np.sqrt(PAPER.image_pixels[1] / (width * height)):
        assert fits.all()  # too narrow for the grid at any drawn size: it shrank to fit
    # gap between horizontal and vertical neighbours: gap +- 2 jitter, never touching
    g = boxes * s[:, None, None]  # resized pixels
    cells = g.reshape(n, 3, 3, 4)
    gap_x = cells[:, :, 1:, 0] - cells[:, :, :-1, 2]  # (n, 3, 2)
    gap_y = cells[:, 1:, :, 1] - cells[:, :-1, :, 3]  # (n, 2, 3)
    for gaps in (gap_x, gap_y):
        assert gaps.min() >= PAPER.gap - 2 * PAPER.jitter - 1e-9
        assert gaps.max() <= PAPER.gap + 2 * PAPER.jitter + 1e-9
        assert gaps.min() < PAPER.gap - PAPER.jitter  # the jitter is used, not zero
    # each patch's offset from the centre: the grid step plus at most 2 jitters per axis
    step = PAPER.patch + PAPER.gap
    rel = g[:, :, :2] - g[:, CENTRE : CENTRE + 1, :2]  # (n, 9, 2) (dx, dy)
    row, col = np.divmod(np.arange(9), 3)
    grid = np.stack([(col - 1) * step, (row - 1) * step], -1)  # (9, 2)
    dev = np.abs(rel - grid)
    assert dev.max() <= 2 * PAPER.jitter + 1e-9 and dev.max() > PAPER.jitter


def test_without_jitter_the_gap_is_exact():
    geom = Geometry(48.0, 24.0, 0.0, (40_000.0, 60_000.0))
    boxes, s = sample_grids(256, 200, 50, geom, np.random.default_rng(1))
    cells = (boxes * s[:, None, None]).reshape(50, 3, 3, 4)
    np.testing.assert_allclose(cells[:, :, 1:, 0] - cells[:, :, :-1, 2], 24.0, atol=1e-6)
    np.testing.assert_allclose(cells[:, 1:, :, 1] - cells[:, :-1, :, 3], 24.0, atol=1e-6)


def test_pairs_are_the_centre_and_each_of_its_8_neighbours_deterministic_per_seed():
    images = [("a", 320, 240), ("b", 256, 256), ("c", 200, 300)]
    t = pair_table(images, 3, PAPER, "drop", seed=5)
    assert len(t) == 3 * 3 * 8 and t.n_patches == 3 * 3 * 9
    assert np.bincount(t.labels).tolist() == [9] * 8  # all 8 positions, balanced
    # the first patch is a grid's centre; the second lies where its label says
    first, second = _centres(t.patch_box[t.first]), _centres(t.patch_box[t.second])
    scale = PAPER.patch / (t.patch_box[t.first, 2] - t.patch_box[t.first, 0])  # (n,)
    steps = (second - first) * scale[:, None] / (PAPER.patch + PAPER.gap)  # (n, 2) (x, y)
    want = NEIGHBOURS[t.labels]  # (n, 2) (row, col)
    np.testing.assert_array_equal(np.round(steps), want[:, ::-1])
    assert np.abs(steps - want[:, ::-1]).max() <= 2 * PAPER.jitter / (PAPER.patch + PAPER.gap)
    assert (t.patch_image[t.first] == t.patch_image[t.second]).all()  # the same image
    assert set(np.unique(t.patch_keep)) == {0, 1, 2}
    # every patch inside its own image
    w = np.array([i[1] for i in images])[t.patch_image]
    h = np.array([i[2] for i in images])[t.patch_image]
    assert (t.patch_box[:, :2] >= 0).all()
    assert (t.patch_box[:, 2] <= w).all() and (t.patch_box[:, 3] <= h).all()
    # deterministic per seed; an image's grids do not depend on the other images
    again = pair_table(images, 3, PAPER, "drop", seed=5)
    np.testing.assert_array_equal(again.patch_box, t.patch_box)
    alone = pair_table(images[1:2], 3, PAPER, "drop", seed=5)
    np.testing.assert_array_equal(alone.patch_box, t.patch_box[t.patch_image == 1])
    other = pair_table(images, 3, PAPER, "drop", seed=6)
    assert not np.allclose(other.patch_box, t.patch_box)
    # the colour mode changes the kept channels only, not the grids
    none = pair_table(images, 3, PAPER, "none", seed=5)
    np.testing.assert_array_equal(none.patch_box, t.patch_box)
    assert (none.patch_keep == -1).all()


def test_colour_projection_removes_green_magenta_and_keeps_greys():
    x = torch.rand(4, 3, 8, 8)
    y = project_colors(x)
    b = torch.tensor([-1.0, 2.0, -1.0])
    assert torch.einsum("c,kchw->khw", b, y).abs().max() < 1e-5  # no green-magenta left
    grey = torch.rand(2, 1, 8, 8).expand(2, 3, 8, 8)
    torch.testing.assert_close(project_colors(grey), grey)
    torch.testing.assert_close(project_colors(y), y, atol=1e-6, rtol=0)  # a projection


def test_colour_dropping_keeps_one_channel_and_fills_the_others_with_faint_noise():
    x = torch.rand(3, 3, 16, 16)
    keep = torch.tensor([0, 2, 1])
    fill = (0.4, 0.5, 0.6)
    y = drop_colors(x, keep, fill, torch.Generator().manual_seed(0))
    for k in range(3):
        torch.testing.assert_close(y[k, keep[k]], x[k, keep[k]])
        for c in {0, 1, 2} - {int(keep[k])}:
            assert abs(float(y[k, c].mean()) - fill[c]) < 1e-3
            assert 0 < float(y[k, c].std()) < 0.02 * float(x[k, keep[k]].std())


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"jitter": 30.0}, "doersch.jitter: 30.0 lets neighbouring patches touch"),
        ({"image_pixels": [5000, 1000]}, r"doersch.image_pixels: \[5000.0, 1000.0\] has min > max"),
        ({"color": "grey"}, "doersch.color: 'grey' is not a valid choice; allowed: drop"),
        ({"hidden": [0]}, r"doersch.hidden\[0\]: 0 is out of range"),
        ({"optimizer": "rmsprop"}, "doersch.optimizer: 'rmsprop' is not a valid choice"),
        ({"weight_decay": -1}, "doersch.weight_decay: -1"),
    ],
)
def test_bad_doersch_params_name_key_value_and_allowed(patch, message):
    with pytest.raises(ConfigError, match=message):
        build(Params, {"doersch": patch})
    with pytest.raises(ConfigError, match="method: 'rotation' is not a valid choice"):
        build(Params, {"method": "rotation"})
    assert build(Params, {}).doersch == DoerschConfig()  # the paper's values by default


# ----------------------------------------------------------------------------- stage

SIZE = 32  # network input: the trunk's output is (192, 1, 1) for EfficientNet-Lite0
# 96 x 96 images kept at their size; 4 grids of 20 px patches per image, 8 pairs each
TOY = {"grids_per_image": 4, "patch": 20, "gap": 8, "jitter": 2, "image_pixels": [9216, 9216],
       "color": "none", "hidden": [64], "lr": 0.01}  # fmt: skip


def _gradient_voc(root, n_images: int = 16, size: int = 96):
    """A tiny VOC dataset whose images encode position: red grows left to right, green
    top to bottom, blue is noise. The relative position of two patches is recoverable."""
    year = write_tiny_voc(root, n_images=n_images, size=size)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, size)
    for path in sorted((year / "JPEGImages").glob("*.jpg")):
        image = np.empty((size, size, 3))
        image[..., 0] = ramp[None, :]
        image[..., 1] = ramp[:, None]
        image[..., 2] = rng.uniform(0, 255, (size, size))
        Image.fromarray(image.astype(np.uint8)).save(path, quality=95)
    return year


def _params(tmp_path, scope="fc", **doersch) -> Params:
    return build(
        Params,
        {
            "method": "doersch",
            "paths": {k: str(tmp_path / k) for k in ("train", "plots", "metrics")},
            "data": {"scenes_root": str(tmp_path / "scenes")},
            "network": {"input_size": SIZE, "scope": scope},
            "train": {"epochs": 6, "batch_size": 16, "lr_step_epoch": 100, "device": "cpu"},
            "doersch": {**TOY, **doersch},
        },
    )


def test_relative_position_is_learned_on_a_recoverable_toy_and_loads_like_the_scn(tmp_path):
    _gradient_voc(tmp_path / "scenes")
    params = _params(tmp_path)
    metrics = stage_script("train")(params)
    assert metrics["source"] == "trunk"
    assert metrics["train_pairs"] == 8 * 4 * 8 and metrics["test_pairs"] == 8 * 4 * 8
    assert metrics["chance_accuracy"] == 0.125
    history = load_trained(tmp_path / "train" / "model.pt").config["history"]
    acc = [h["test_accuracy"] for h in history]
    assert acc[-1] > 0.5, acc  # well above chance (1/8) on held-out images
    assert history[-1]["test_loss"] < history[0]["test_loss"] < np.log(8) + 0.5
    assert (tmp_path / "train" / "doersch_train.h5").is_file()

    # model.pt: the bottom stream, rebuilt by load_trained as for the SCN
    trained = load_trained(tmp_path / "train" / "model.pt")
    assert trained.method == "doersch" and trained.context_module is None
    assert trained.config["scope"] == "fc" and trained.config["doersch"]["color"] == "none"
    x = torch.randn(3, 3, SIZE, SIZE)
    original = build_backbone("efficientnet_lite0", input_size=SIZE)
    h = trained.features(x)
    assert h.shape == (3, original.feature_dim)
    assert not torch.allclose(h, original.features(x))  # the head trained
    trunk, _ = original.split("fc")
    assert_close_rel(trained.trunk(x), trunk(x))  # the trunk stayed frozen
    with pytest.raises(ValueError, match="method 'doersch', which has no context module"):
        trained.context(h, torch.zeros(3, 8))
    assert trained.backbone.detection_parts()[0] is not None  # what detect uses

    # a second run reuses the trunk caches and resumes the finished checkpoint
    before = (tmp_path / "train" / "doersch_train.h5").stat().st_mtime_ns
    again = stage_script("train")(params)
    assert (tmp_path / "train" / "doersch_train.h5").stat().st_mtime_ns == before
    assert again["resumed_from_epoch"] == 6 and again["test_accuracy"] == metrics["test_accuracy"]


def test_image_and_trunk_paths_feed_the_same_patches(tmp_path):
    """The cached trunk rows are the trunk applied to the crops the image path makes
    (colour dropping included): both sources train on the same samples."""
    year = _gradient_voc(tmp_path / "scenes", n_images=4)
    from pipeline.data.voc import VOCDataset

    ds = VOCDataset(year, "train", classes=("sun", "cloud", "bird", "tree", "house", "window",
                                            "car", "wheel", "ball", "plate"))  # fmt: skip
    geom = Geometry(20.0, 8.0, 2.0, (9216.0, 9216.0))
    table = pair_table([(im.id, im.width, im.height) for im in ds], 2, geom, "drop", seed=3)
    bb = build_backbone("efficientnet_lite0", input_size=SIZE)
    crops = ImageCrops(table, {im.id: im.path for im in ds},
                       {im.id: (im.width, im.height) for im in ds},
                       (SIZE, bb.mean, bb.std), "drop", seed=3)  # fmt: skip
    trunk, _ = bb.split("fc")
    path = tmp_path / "cache.h5"
    assert trunk_cache(path, crops, trunk, {"k": 1}, torch.device("cpu"))
    assert not trunk_cache(path, crops, trunk, {"k": 1}, torch.device("cpu"))  # reused
    assert trunk_cache(path, crops, trunk, {"k": 2}, torch.device("cpu"))  # stale: rebuilt
    from_trunk = GridPairs(table, crops, "trunk", path)
    from_image = GridPairs(table, crops, "image")
    rows = [0, 5, 9, 15]
    a, b = from_trunk[rows], from_image[rows]
    assert torch.equal(a["label"], b["label"])
    with torch.no_grad():
        assert_close_rel(trunk(b["a"]), a["a"])  # other batches: other kernels' rounding
        assert_close_rel(trunk(b["b"]), a["b"])
    assert b["a"].shape == (4, 3, SIZE, SIZE)
    # colour dropping: two channels of each crop are (normalised) near-constant noise
    per_channel = b["a"].flatten(2).std(2)  # (4, 3)
    assert ((per_channel < 0.05).sum(1) == 2).all()


def test_warm_up_keeps_the_bottom_stream_and_best_selects_on_accuracy(tmp_path):
    """train.context_warmup_epochs freezes the shared head while the classifier learns;
    train.select: best keeps the epoch with the best held-out accuracy."""
    _gradient_voc(tmp_path / "scenes", n_images=8)
    params = _params(tmp_path)
    # the SCN's regime (Adam, no weight decay) does not reach Doersch's SGD step size
    train = dataclasses.replace(params.train, epochs=1, context_warmup_epochs=1, select="best",
                                optimizer="adam", weight_decay=0.0, lr=1e-5)  # fmt: skip
    metrics = stage_script("train")(dataclasses.replace(params, train=train))
    trained = load_trained(tmp_path / "train" / "model.pt")
    assert params.doersch.optimizer == "sgd" and params.doersch.weight_decay == 5e-4
    assert trained.config["train"]["optimizer"] == "sgd"
    assert trained.config["train"]["weight_decay"] == 5e-4
    assert trained.config["train"]["lr"] == params.doersch.lr != 1e-5  # doersch.lr, not train's
    assert trained.config["doersch"]["optimizer"] == "sgd"
    x = torch.randn(3, 3, SIZE, SIZE)
    original = build_backbone("efficientnet_lite0", input_size=SIZE)
    torch.testing.assert_close(trained.features(x), original.features(x), rtol=0, atol=0)
    history = trained.config["history"]
    assert history[0]["lr"] == pytest.approx(params.doersch.lr)  # the optimiser's step size
    assert history[0]["test_accuracy"] > 0.125  # the classifier learnt on frozen h1
    assert metrics["best_epoch"] == 1 and metrics["selected_epoch"] == 1
    assert metrics["best_test_accuracy"] == history[0]["test_accuracy"]
