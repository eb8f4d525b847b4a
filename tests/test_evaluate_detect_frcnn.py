"""Fast R-CNN: coordinate frame, sampling, and a tiny training run that must work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import RoIAlign

from pipeline.evaluate.config import DetectConfig
from pipeline.evaluate.detect.detection_ap import GroundTruth, evaluate_detections
from pipeline.evaluate.detect.fast_rcnn import (
    DetectionImage,
    FastRCNN,
    FeatureSource,
    detect,
    from_network_frame,
    prepare_image,
    resized_shape,
    sample_rois,
    to_network_frame,
    train_fast_rcnn,
)
from tests.helpers.numeric import assert_close_rel


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP spinning makes 2 far slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------- coordinate frame


def test_rescale_follows_fast_rcnn_rule():
    assert resized_shape(500, 375, 600, 1000) == (800, 600)  # shorter side to 600
    assert resized_shape(2000, 500, 600, 1000) == (1000, 250)  # longer side capped
    assert resized_shape(256, 256, 256, 512) == (256, 256)


def _marked_image() -> tuple[np.ndarray, np.ndarray]:
    """A 90x60 (w x h) black image with a red box on the left and a green one elsewhere."""
    im = np.zeros((60, 90, 3), np.uint8)
    gt = np.array([[6, 10, 36, 40]], np.float32)  # x1, y1, x2, y2 (continuous)
    im[10:40, 6:36] = (255, 0, 0)
    im[20:50, 60:80] = (0, 255, 0)
    return im, gt


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("min_size", [60, 150, 37])
def test_proposal_equal_to_gt_pools_the_gt_region(flip, min_size):
    image, gt = _marked_image()
    new_size = resized_shape(90, 60, min_size, 1000)
    x = prepare_image(image, new_size, flip, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # (3, h', w')
    assert x.shape[1:] == (new_size[1], new_size[0])
    box = torch.from_numpy(to_network_frame(gt, (90, 60), new_size, flip))  # (1, 4)
    pool = RoIAlign((5, 5), 1.0, sampling_ratio=2, aligned=True)
    # shrink the box by one resized pixel so bilinear samples stay inside the region
    s = new_size[0] / 90
    inner = box + torch.tensor([[s, s, -s, -s]])
    pooled = pool(x[None], [inner])[0]  # (3, 5, 5)
    assert torch.allclose(pooled[0], torch.ones(5, 5), atol=0.08), "not the red region"
    assert pooled[1:].abs().max() < 0.08
    # the trap: the original-frame box on the resized/flipped image pools something else
    if flip or new_size != (90, 60):
        wrong = pool(x[None], [torch.from_numpy(gt)])[0]
        assert not torch.allclose(wrong[0], torch.ones(5, 5), atol=0.08)


def test_network_frame_roundtrip():
    boxes = np.array([[0, 0, 90, 60], [10.5, 3, 20, 59]], np.float32)
    new_size = resized_shape(90, 60, 150, 1000)
    net = to_network_frame(boxes, (90, 60), new_size, False)
    assert net[0].tolist() == [0, 0, new_size[0], new_size[1]]
    back = from_network_frame(torch.from_numpy(net), (90, 60), new_size).numpy()
    assert_close_rel(back, boxes, rel=1e-6)  # float32 rounding of pixel coordinates
    flipped = to_network_frame(boxes, (90, 60), new_size, True)
    assert_close_rel(flipped[0], net[0], rel=1e-6)  # full-image box is symmetric
    assert_close_rel(flipped[1, [0, 2]], new_size[0] - net[1, [2, 0]], rel=1e-6)


# ----------------------------------------------------------------- sampling


def test_sampling_fractions_and_labels():
    gt = torch.tensor([[0.0, 0, 100, 100]])
    labels = torch.tensor([3])
    # 40 fg (IoU >= 0.5), 100 bg (IoU in [0.1, 0.5)), 50 below 0.1 (never sampled)
    fg = torch.tensor([[0.0, 0, 100, 100 - k] for k in range(40)])
    bg = torch.tensor([[0.0, 0, 100, 12 + 0.3 * k] for k in range(100)])
    low = torch.tensor([[0.0, 0, 100, 1 + 0.1 * k] for k in range(50)])
    props = torch.cat([fg, bg, low])
    cfg = DetectConfig(rois_per_image=64, fg_fraction=0.25)
    rois, lab, matched = sample_rois(props, gt, labels, cfg, torch.Generator().manual_seed(0))
    assert len(rois) == 64
    assert int((lab > 0).sum()) == 16  # 25% of 64
    assert set(lab.tolist()) == {0, 3}
    from torchvision.ops import box_iou

    iou = box_iou(rois, gt)[:, 0]
    assert bool((iou[lab > 0] >= 0.5).all())
    assert bool(((iou[lab == 0] >= 0.1) & (iou[lab == 0] < 0.5)).all())
    assert torch.equal(matched, gt.expand(64, 4))
    # few foreground candidates: all are used, background fills up to the rest
    rois, lab, _ = sample_rois(
        torch.cat([fg[:3], bg]), gt, labels, cfg, torch.Generator().manual_seed(0)
    )
    assert int((lab > 0).sum()) == 3 and len(rois) == 64
    # short of both: fewer RoIs, never duplicates
    rois, lab, _ = sample_rois(
        torch.cat([fg[:3], bg[:5], low]), gt, labels, cfg, torch.Generator().manual_seed(0)
    )
    assert len(rois) == 8 and len(torch.unique(rois, dim=0)) == 8


def test_sampling_is_seeded():
    gt = torch.tensor([[0.0, 0, 100, 100]])
    props = torch.tensor([[0.0, 0, 100, 100 - k] for k in range(80)])
    cfg = DetectConfig(rois_per_image=8, fg_fraction=0.5)
    a = sample_rois(props, gt, torch.tensor([1]), cfg, torch.Generator().manual_seed(5))[0]
    b = sample_rois(props, gt, torch.tensor([1]), cfg, torch.Generator().manual_seed(5))[0]
    assert torch.equal(a, b)


# ----------------------------------------------------------------- tiny training run

SIZE = 64
COLOURS = {1: (220, 30, 30), 2: (30, 30, 220)}  # class 1 red, class 2 blue


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = rng.integers(90, 140, (SIZE, SIZE, 3)).astype(np.uint8)
    cls = int(rng.integers(1, 3))
    w, h = (int(v) for v in rng.integers(22, 40, 2))
    x, y = int(rng.integers(0, SIZE - w)), int(rng.integers(0, SIZE - h))
    image[y : y + h, x : x + w] = COLOURS[cls]
    return image, np.array([[x, y, x + w, y + h]], np.float32), np.array([cls])


def _proposals(rng: np.random.Generator, gt: np.ndarray) -> np.ndarray:
    """Jittered copies of the object (some good, some poor) and random boxes."""
    x1, y1, x2, y2 = gt[0]
    w, h = x2 - x1, y2 - y1
    jit = [
        [x1 + dx * w, y1 + dy * h, x2 + dw * w, y2 + dh * h]
        for dx, dy, dw, dh in rng.uniform(-0.4, 0.4, (12, 4))
    ]
    rnd = []
    for _ in range(12):
        a, b = rng.uniform(0, SIZE - 12, 2)
        rnd.append([a, b, min(SIZE, a + rng.uniform(10, 40)), min(SIZE, b + rng.uniform(10, 40))])
    return np.clip(np.array(jit + rnd, np.float32), 0, SIZE)


class TinyBody(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU()
        )  # stride 4

    def forward(self, x):
        return self.net(x)  # (B, 32, H/4, W/4)


def tiny_model(num_classes: int = 2, train_body: bool = True, seed: int = 0) -> FastRCNN:
    torch.manual_seed(seed)
    head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU())  # (R, 64)
    return FastRCNN(TinyBody(), 4, 4, head, 64, num_classes, train_body=train_body)


def tiny_data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    images, pixels = [], []
    for k in range(n):
        image, gt, lab = _scene(rng)
        pixels.append(image)
        images.append(
            DetectionImage(f"{k}", SIZE, SIZE, _proposals(rng, gt), gt, lab, np.zeros(1, bool))
        )
    return images, pixels


def tiny_schedule(iterations: int) -> DetectConfig:
    return DetectConfig(
        iterations=iterations, lr=0.01, lr_step=iterations * 3 // 4, lr_gamma=0.1,
        momentum=0.9, weight_decay=5e-4, images_per_batch=2, flip=True, add_gt_rois=True,
        rois_per_image=16, fg_fraction=0.25,
    )  # fmt: skip


def _source(images, pixels, cache_mb=0):
    return FeatureSource(images, lambda i: pixels[i], (0.5,) * 3, (0.25,) * 3, 96, 200, cache_mb)


def test_tiny_training_lowers_loss_and_detects_the_object():
    train_images, train_px = tiny_data(24, seed=1)
    test_images, test_px = tiny_data(16, seed=2)
    model = tiny_model()
    hist = train_fast_rcnn(
        model, _source(train_images, train_px), tiny_schedule(300), 0, torch.device("cpu")
    )
    first = np.mean([h["loss"] for h in hist[:20]])
    last = np.mean([h["loss"] for h in hist[-20:]])
    assert last < 0.75 * first, (first, last)
    dets = detect(model, _source(test_images, test_px), 0.05, 0.3, 100, torch.device("cpu"))
    gts = [GroundTruth.make(im.gt_boxes, im.gt_labels - 1) for im in test_images]
    result = evaluate_detections(dets, gts, ("red", "blue"))
    assert result["map"] > 0.6, result
    # the top detection of each image sits on the object (IoU > 0.5) with the right class
    hits = 0
    for (boxes, scores, labels), im in zip(dets, test_images, strict=True):
        if len(scores):
            top = int(np.argmax(scores))
            from pipeline.boxes import box_iou

            iou = box_iou(boxes[top], im.gt_boxes)[0, 0]
            hits += int(iou > 0.5 and labels[top] == im.gt_labels[0] - 1)
    assert hits >= 12, hits


def test_frozen_body_training_is_deterministic_and_caches_features():
    images, px = tiny_data(6, seed=3)
    runs = []
    for _ in range(2):
        model = tiny_model(train_body=False)
        body_before = {k: v.clone() for k, v in model.body.state_dict().items()}
        source = _source(images, px, cache_mb=16)
        hist = train_fast_rcnn(model, source, tiny_schedule(12), 7, torch.device("cpu"))
        for k, v in model.body.state_dict().items():
            assert torch.equal(v, body_before[k]), f"frozen body changed: {k}"
        assert len(source.cache) > 0 and all(key[0] < 6 for key in source.cache)
        runs.append((hist, model.state_dict()))
    assert [h["loss"] for h in runs[0][0]] == [h["loss"] for h in runs[1][0]]
    for k, v in runs[0][1].items():
        assert torch.equal(v, runs[1][1][k]), k


def test_every_trainable_parameter_gets_a_gradient():
    model = tiny_model()
    model.train()
    x = torch.randn(2, 3, 32, 32)
    rois = [torch.tensor([[0.0, 0, 16, 16], [4, 4, 30, 30]]), torch.tensor([[2.0, 2, 20, 28]])]
    logits, deltas = model(x, rois)  # (3, 3), (3, 12)
    assert logits.shape == (3, 3) and deltas.shape == (3, 12)
    (logits.sum() + deltas.sum()).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
