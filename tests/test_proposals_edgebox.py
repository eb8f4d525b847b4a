"""EdgeBoxes proposals and the edge sources (Sobel, HED in PyTorch, structured edges)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pipeline.config import ConfigError, build
from pipeline.data.voc import VOCDataset
from pipeline.errors import DataError, SkipPolicy
from pipeline.params import Params
from pipeline.proposals.config import EdgeBoxConfig
from pipeline.proposals.edgebox import (
    EdgeBoxProposer,
    boxes_from_rects,
    run_edgeboxes,
    thresholds,
)
from pipeline.proposals.edges import SobelEdges, StructuredEdges, edges_nms, load_hed
from pipeline.proposals.stage import get_method
from tests.helpers.voc import TINY_CLASSES


def _params(tiny_voc, **edgebox):
    return build(
        Params,
        {
            "data": {"scenes_root": str(tiny_voc.parent.parent)},
            "proposals": {"workers": 1, "edgebox": edgebox},
        },
    )


def _china() -> np.ndarray:
    import cv2
    from sklearn.datasets import load_sample_image

    img = load_sample_image("china.jpg")  # (427, 640, 3) uint8, a real photo
    return cv2.resize(img, (320, 214), interpolation=cv2.INTER_AREA)  # half size: faster


def test_sobel_edges_are_thin_and_in_range():
    img = np.zeros((64, 64, 3), np.uint8)
    img[16:48, 16:48] = 255  # a white square
    edges, orient = SobelEdges()(img)
    assert edges.shape == orient.shape == (64, 64)
    assert edges.dtype == orient.dtype == np.float32
    assert edges.min() >= 0 and edges.max() <= 1
    assert orient.min() >= 0 and orient.max() < np.pi + 1e-6
    assert edges[32, 14:19].max() > 0.5  # the left side of the square is an edge
    assert (edges[32, 14:19] > 0).sum() <= 2  # ... thinned to one or two pixels by NMS
    assert edges[32, 32] == 0 and edges[2, 2] == 0


def test_edges_nms_keeps_only_ridge():
    e = np.tile(np.array([0.1, 0.5, 1.0, 0.5, 0.1], np.float32), (5, 1))  # vertical ridge
    o = np.zeros_like(e)  # normal along x
    out = edges_nms(e, o, r=1, s=0, m=1.0)
    np.testing.assert_array_equal(out[:, 2], 1.0)
    assert (out[:, [1, 3]] == 0).all()


def test_boxes_from_rects_converts_opencv_one_based_corners():
    rects = np.array([[1, 1, 10, 20], [5, 3, 200, 200]], np.float32)
    np.testing.assert_array_equal(
        boxes_from_rects(rects, 100, 100), [[0, 0, 10, 20], [4, 2, 100, 100]]
    )


def test_edgebox_on_real_photo_gives_filtered_boxes():
    settings = EdgeBoxConfig(min_score=0.1, max_aspect_ratio=3, min_size=16, max_boxes=20)
    boxes, scores = EdgeBoxProposer(settings)(_china())
    assert 5 <= len(boxes) <= 20
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (np.minimum(w, h) >= 16).all()
    assert (np.maximum(w, h) / np.minimum(w, h) <= 3).all()
    assert (scores >= 0.1).all() and (np.diff(scores) <= 0).all()
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 320).all() and (boxes[:, 3] <= 214).all()


def test_edgebox_method_on_tiny_voc_finds_the_shapes(tiny_voc):
    ds = VOCDataset(tiny_voc, "test", TINY_CLASSES)
    params = _params(tiny_voc, max_boxes=20, min_size=8)
    props = get_method("edgebox")(ds, params.proposals, "test")
    assert props.image_ids == ds.ids
    assert props.provenance["edge_source"] == "sobel"
    assert props.provenance["thresholds"]["max_boxes"] == 20
    for im, b, s in zip(ds, props.boxes, props.scores, strict=True):
        assert b.dtype == np.float32 and b.shape[1] == 4 and 1 <= len(b) <= 20
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 2] <= im.width).all()
        assert (np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) >= 8).all()
        assert (s >= 0.1).all()
    from pipeline.proposals.stage import recall_at

    recall = recall_at([im.boxes() for im in ds], props.boxes)
    assert recall[0.5] >= 0.5  # plain shapes on flat backgrounds are easy


def test_workers_1_and_2_give_identical_output(tiny_voc):
    ds = VOCDataset(tiny_voc, "train", TINY_CLASSES)
    tasks = [(i, str(im.path), im.width, im.height) for i, im in enumerate(ds)]
    settings = EdgeBoxConfig(min_size=8)
    one = list(run_edgeboxes(tasks, settings, workers=1))
    two = list(run_edgeboxes(tasks, settings, workers=2))
    assert [r[0] for r in two] == list(range(len(tasks)))
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[2], b[2])


def test_bad_and_blank_images_are_skipped_or_empty(tiny_voc):
    from PIL import Image

    Image.new("RGB", (96, 96), (40, 40, 40)).save(tiny_voc / "JPEGImages" / "000001.jpg")
    ds = VOCDataset(tiny_voc, "train", TINY_CLASSES, check_images=False)
    (tiny_voc / "JPEGImages" / "000002.jpg").write_bytes(b"garbage")
    ds.policy = SkipPolicy(on_error="skip", max_skip_fraction=0.5)
    props = get_method("edgebox")(ds, _params(tiny_voc, min_size=8).proposals, "train")
    assert "000002" not in props.image_ids and len(props) == len(ds) - 1
    assert ds.policy.reasons["corrupt_image"] == 1
    assert len(props.boxes[props.index("000001")]) == 0  # a blank image has no proposals
    ds.policy = SkipPolicy(on_error="fail")
    with pytest.raises(DataError, match=r"000002.jpg"):
        get_method("edgebox")(ds, _params(tiny_voc).proposals, "train")


def test_hed_loads_real_weights_and_gives_edges_in_unit_range():
    model = load_hed()
    img = np.zeros((40, 56, 3), np.uint8)  # odd sizes exercise ceil-mode pooling
    img[10:30, 12:40] = (220, 30, 30)
    import torch

    x = torch.from_numpy(img[:, :, ::-1].astype(np.float32).copy()).permute(2, 0, 1)[None]
    x = x - torch.tensor([104.00699, 116.66877, 122.67892]).view(1, 3, 1, 1)
    with torch.inference_mode():
        e = model(x)[0, 0].numpy()  # (40, 56)
    assert e.shape == (40, 56) and e.min() >= 0 and e.max() <= 1
    # edges on the rectangle's outline, not in its flat inside or the flat background
    assert e[10, 20:30].mean() > 0.5 and e[20, 24] < 0.2 and e[38, 2] < 0.5


@pytest.mark.slow
def test_hed_edge_source_runs_edgeboxes(tiny_voc):
    ds = VOCDataset(tiny_voc, "train", TINY_CLASSES)
    ds.images = ds.images[:2]
    props = get_method("edgebox")(
        ds, _params(tiny_voc, edge_source="hed", min_size=8).proposals, "train"
    )
    assert len(props.provenance["weights_sha256"]) == 64
    assert all(len(b) >= 1 for b in props.boxes)


def test_sed_without_model_is_a_clear_error(tiny_voc, tmp_path):
    with pytest.raises(ConfigError, match=r"proposals.edgebox.sed_model"):
        _params(tiny_voc, edge_source="sed")
    with pytest.raises(DataError, match=r"model.yml.gz.*not found"):
        StructuredEdges(tmp_path / "model.yml.gz")
    params = _params(tiny_voc, edge_source="sed", sed_model=str(tmp_path / "model.yml.gz"))
    ds = VOCDataset(tiny_voc, "train", TINY_CLASSES)
    with pytest.raises(DataError, match="structured-edge model not found"):
        get_method("edgebox")(ds, params.proposals, "train")
    bad = tmp_path / "bad.yml.gz"
    bad.write_bytes(b"nope")
    with pytest.raises(DataError, match=r"bad.yml.gz"):
        StructuredEdges(bad)


def test_thresholds_follow_config(tiny_voc):
    cfg = _params(tiny_voc, alpha=0.5, max_boxes=7).proposals.edgebox
    assert thresholds(cfg) == {
        "alpha": 0.5,
        "beta": 0.75,
        "min_score": 0.1,
        "max_aspect_ratio": 3.0,
        "min_size": 16,
        "max_boxes": 7,
    }
    assert thresholds(replace(cfg, alpha=0.65)) != thresholds(cfg)


def test_result_of_an_image_does_not_depend_on_the_previous_one():
    # OpenCV's EdgeBoxes object keeps state between calls; the proposer must not
    import cv2
    from sklearn.datasets import load_sample_image

    a = cv2.resize(load_sample_image("china.jpg"), (96, 96))
    b = cv2.resize(load_sample_image("flower.jpg"), (96, 96))
    proposer = EdgeBoxProposer(EdgeBoxConfig(min_size=8))
    first = proposer(b)
    proposer(a)
    again = proposer(b)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


def test_sobel_maps_lie_on_the_quantisation_grid_and_follow_opencv():
    import cv2

    from pipeline.proposals.edges import EDGE_LEVELS, deterministic_sobel

    img = _china()
    edges, orient = SobelEdges(nms=False)(img)
    np.testing.assert_array_equal(np.rint(edges.astype(np.float64) * EDGE_LEVELS) / EDGE_LEVELS,
                                  edges)  # fmt: skip
    k = orient.astype(np.float64) * EDGE_LEVELS / np.pi
    assert np.abs(k - np.rint(k)).max() < 1e-3 and orient.max() < np.pi
    # the float64 blur + Sobel is OpenCV's, to float32 precision of the gradient's scale
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    blurred = cv2.GaussianBlur(grey, (0, 0), 1.0)
    gx, gy = deterministic_sobel(grey.astype(np.float64), 1.0)
    for ours, theirs in ((gx, cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3)),
                         (gy, cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3))):  # fmt: skip
        assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max()


_SIMD_SCRIPT = """
import hashlib, sys
import numpy as np
sys.path.insert(0, {root!r})
from tests.test_proposals_edgebox import _china
from pipeline.proposals.config import EdgeBoxConfig
from pipeline.proposals.edgebox import EdgeBoxProposer
from pipeline.proposals.edges import SobelEdges
img = _china()
h = hashlib.sha256()
for a in (*SobelEdges()(img), *EdgeBoxProposer(EdgeBoxConfig(min_size=8))(img)):
    h.update(np.ascontiguousarray(a).tobytes())
print(h.hexdigest())
"""


def test_sobel_edgeboxes_do_not_depend_on_the_cpus_simd_kernels():
    """The maps and boxes are the same bits with numpy's and OpenCV's dispatched SIMD
    kernels (AVX2, AVX-512 where the CPU has them) switched off, as on an older CPU, and
    with an AVX2 machine's kernels (tools.other_cpu)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tools.other_cpu import environment, numpy_features

    if not numpy_features("default"):
        pytest.skip("this CPU has no AVX/FMA kernels to switch off")
    root = str(Path(__file__).resolve().parent.parent)
    script = _SIMD_SCRIPT.format(root=root)

    def digest(env: dict[str, str]) -> str:
        out = subprocess.run([sys.executable, "-c", script], env=env,
                             capture_output=True, text=True, check=True, cwd=root)  # fmt: skip
        return out.stdout.strip().splitlines()[-1]

    plain = digest(dict(os.environ))
    assert len(plain) == 64
    assert digest(environment("default")) == plain
    assert digest(environment("avx2")) == plain
