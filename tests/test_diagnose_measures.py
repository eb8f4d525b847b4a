"""The diagnose measures with known answers: R^2 helpers, context predictability,
ground-truth matching of patches and pairs, the object cap, and the supervised ceiling
on toy tensors (it must beat the original where the frozen head is blind)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.boxes import box_iou, pair_iou
from pipeline.diagnose.ceiling import head_features, train_ceiling
from pipeline.diagnose.measures import (
    class_mean_r2,
    context_predictability,
    explained_share,
    match_labels,
    ridge_r2,
)
from pipeline.evaluate.classify.svm import train_and_test
from tests.helpers.numeric import assert_close_rel

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- R^2


def test_explained_share_known_values():
    y = np.array([[0.0], [2.0]])
    assert explained_share(y, y) == 1.0
    assert explained_share(y, np.array([[1.0], [1.0]])) == 0.0  # the mean
    assert explained_share(y, np.array([[0.0], [1.0]])) == pytest.approx(0.5)
    assert explained_share(y, np.array([[2.0], [0.0]])) == pytest.approx(-3.0)
    assert np.isnan(explained_share(np.ones((3, 2)), np.ones((3, 2))))


def test_class_mean_r2_known_value_and_unseen_label():
    train_x = np.array([[0.0, 5.0], [2.0, 5.0], [10.0, 5.0], [12.0, 5.0]])
    train_l = np.array([0, 0, 1, 1])
    test_x = np.array([[0.0, 5.0], [2.0, 5.0], [10.0, 5.0], [12.0, 5.0]])
    # class means 1 and 11: SSE 4, SST 36 + 16 + 16 + 36 = 104
    assert class_mean_r2(train_x, train_l, test_x, train_l, 2) == pytest.approx(1 - 4 / 104)
    # a label without training rows is predicted by the overall training mean (6)
    r2 = class_mean_r2(train_x, train_l, test_x, np.array([0, 0, 2, 2]), 3)
    assert r2 == pytest.approx(1 - (1 + 1 + 16 + 36) / 104)


def test_ridge_r2_linear_map_is_explained_and_noise_is_not():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))
    a = rng.normal(size=(6, 3))
    y = x @ a + 0.01 * rng.normal(size=(400, 3))
    r2, alpha = ridge_r2(x[:300], y[:300], x[300:], y[300:], alphas=1e-3)
    assert r2 > 0.99 and alpha == 1e-3
    noise = rng.normal(size=(400, 3))
    assert ridge_r2(x[:300], noise[:300], x[300:], noise[300:], alphas=10.0)[0] < 0.05


def test_ridge_r2_chooses_the_penalty_by_grouped_cross_validation():
    """Many noisy inputs, few rows: a small penalty overfits, CV picks a large one; with
    a clean linear map it picks a small one."""
    rng = np.random.default_rng(1)
    alphas = (1e-3, 1e4)
    x = rng.normal(size=(240, 150))
    y = x[:, :1] + 3.0 * rng.normal(size=(240, 1))  # weak signal in one of 150 inputs
    groups = np.repeat(np.arange(60), 4)  # 4 rows per "image"
    r2, alpha = ridge_r2(x[:180], y[:180], x[180:], y[180:], alphas, groups=groups[:180])
    assert alpha == 1e4
    assert r2 > ridge_r2(x[:180], y[:180], x[180:], y[180:], 1e-3)[0]
    clean = x[:, :3] @ np.array([[1.0], [2.0], [-1.0]])
    assert ridge_r2(x[:180], clean[:180], x[180:], clean[180:], alphas, groups[:180])[1] == 1e-3


# --------------------------------------------------------------------------- context


def _layout(n: int, n_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    bottom = rng.integers(0, n_classes, n)
    offset = rng.uniform(-1, 1, (n, 8))
    return bottom, offset, rng


@pytest.mark.parametrize("model", ["trees", "logistic"])
def test_context_top_class_a_function_of_the_bottom_class(model):
    c = 5
    bt, ot, _ = _layout(600, c, 0)
    be, oe, _ = _layout(300, c, 1)
    res = context_predictability(bt, ot, (bt + 1) % c, be, oe, (be + 1) % c, c, model)
    assert res.accuracy == pytest.approx(1.0)
    assert res.majority_rate < 0.35  # about 1 / c
    assert res.ratio == pytest.approx(res.accuracy / res.majority_rate)
    assert res.ratio > 2.5


def test_context_top_class_a_function_of_the_offset():
    """Above or below the bottom object decides the top class: trees learn it."""
    c = 4
    bt, ot, _ = _layout(800, c, 2)
    be, oe, _ = _layout(300, c, 3)
    res = context_predictability(
        bt, ot, np.where(ot[:, 1] > 0, 0, 3), be, oe, np.where(oe[:, 1] > 0, 0, 3), c, "trees"
    )
    assert res.accuracy > 0.95
    assert 0.4 < res.majority_rate < 0.6


def test_context_without_context_is_near_the_majority_rate():
    c = 3
    bt, ot, rng = _layout(900, c, 4)
    be, oe, _ = _layout(900, c, 5)
    top_t = (rng.uniform(size=900) < 0.6).astype(int)  # 60% class 0, 40% class 1
    top_e = (rng.uniform(size=900) < 0.6).astype(int)
    res = context_predictability(bt, ot, top_t, be, oe, top_e, c, "logistic")
    assert abs(res.accuracy - res.majority_rate) < 0.06
    d = res.to_dict(("a", "b", "c"))
    assert d["majority_class"] in ("a", "b") and d["n_test_pairs"] == 900


# --------------------------------------------------------------------------- matching


def test_match_labels_on_hand_made_boxes():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=float)
    gt_cls = np.array([2, 5])
    boxes = np.array(
        [
            [0, 0, 10, 10],  # IoU 1 -> 2
            [0, 0, 10, 20],  # IoU 100 / 200 = 0.5 -> 2 (>=)
            [0, 0, 10, 21],  # IoU 100 / 210 < 0.5 -> background
            [21, 21, 30, 30],  # IoU 81 / 100 -> 5
            [50, 50, 60, 60],  # nothing -> background
        ],
        dtype=float,
    )
    labels, best = match_labels(boxes, gt, gt_cls, background=10, thr=0.5)
    assert labels.tolist() == [2, 2, 10, 5, 10]
    assert best == pytest.approx([1.0, 0.5, 100 / 210, 0.81, 0.0])
    labels, best = match_labels(boxes, np.zeros((0, 4)), np.zeros(0), background=10, thr=0.5)
    assert labels.tolist() == [10] * 5 and best.tolist() == [0.0] * 5
    assert box_iou(boxes, gt).shape == (5, 2)


def test_pair_ious_on_hand_made_boxes():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10]], dtype=float)
    assert pair_iou(a, b) == pytest.approx([1.0, 50 / 150, 0.0])
    share_low = float(np.mean(pair_iou(a, b) < 0.2))
    assert share_low == pytest.approx(1 / 3)


# --------------------------------------------------------------------------- object cap


def test_cap_objects_keeps_whole_images_in_split_order(tiny_voc):
    from pipeline.data.config import SCENE_CLASSES
    from pipeline.data.voc import VOCDataset
    from pipeline.diagnose.stage import cap_objects

    ds = VOCDataset(tiny_voc, "train", classes=SCENE_CLASSES)
    total = sum(len(im.objects) for im in ds)
    assert cap_objects(ds, total, np.random.default_rng(0)) is ds
    sub = cap_objects(ds, 5, np.random.default_rng(0))
    n = sum(len(im.objects) for im in sub)
    assert 0 < n <= max(5, min(len(im.objects) for im in ds)) < total
    order = [ds.ids.index(i) for i in sub.ids]
    assert order == sorted(order) and sub.by_id(sub.ids[0]) is sub.images[0]


# --------------------------------------------------------------------------- ceiling


def test_trunk_then_head_is_the_classify_feature_of_the_original(tiny_voc):
    """The original's Obj features in diagnose (trunk rows through the head) are the
    classify stage's (the whole backbone on the same crops)."""
    from pipeline.backbones import build_backbone
    from pipeline.data.config import SCENE_CLASSES
    from pipeline.data.voc import VOCDataset
    from pipeline.diagnose.stage import object_trunks
    from pipeline.evaluate.classify.features import (
        compute_features,
        original_extractor,
        trunk_extractor,
    )

    ds = VOCDataset(tiny_voc, "train", classes=SCENE_CLASSES)
    bb = build_backbone("efficientnet_lite0", input_size=64)
    cpu = torch.device("cpu")
    trunk, head = bb.split("fc")
    shape = tuple(trunk(torch.zeros(1, 3, 64, 64)).shape[1:])
    obj = object_trunks(ds, trunk_extractor(bb, trunk, cpu), shape, batch_size=8)
    ref = compute_features(ds, "obj", original_extractor(bb, cpu), batch_size=8)
    assert_close_rel(head_features(head, obj["x"], 8), ref["features"])
    np.testing.assert_array_equal(obj["labels"], ref["labels"])


def _toy(n: int, seed: int):
    """4-d inputs; the class is the sign of dimension 0, the rest is noise."""
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def _labels(y: np.ndarray) -> np.ndarray:
    out = -np.ones((len(y), 2), dtype=np.int8)
    out[np.arange(len(y)), y] = 1
    return out


def test_ceiling_beats_an_original_head_blind_to_the_label():
    """The original head ignores dimension 0 (zero weights), so its features carry no
    label information and the SVM is at chance; fine-tuning with the labels opens it."""
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(4, 16), nn.ReLU())
    with torch.no_grad():
        head[0].weight[:, 0] = 0.0
    xtr, ytr = _toy(400, 0)
    xte, yte = _toy(400, 1)
    fit = train_ceiling(
        head, xtr, ytr, 2, epochs=30, lr=1e-2, batch_size=32, holdout=0.2, patience=5, seed=0
    )
    assert fit.best_epoch >= 1 and len(fit.history) == fit.epochs_run + 1
    assert fit.history[fit.best_epoch]["holdout_accuracy"] > 0.9
    assert torch.equal(head[0].weight[:, 0], torch.zeros(16))  # the original is untouched

    def svm_map(h: nn.Module) -> float:
        tr, te = head_features(h, xtr, 64), head_features(h, xte, 64)
        res = train_and_test(tr, _labels(ytr), te, _labels(yte), ("neg", "pos"), (0.1, 1.0, 10.0))
        return res.map

    original, ceiling = svm_map(head), svm_map(fit.head)
    assert original < 0.65  # chance is 0.5
    assert ceiling > 0.9
    assert ceiling - original > 0.3


def test_ceiling_keeps_the_best_held_out_epoch():
    """With an absurd learning rate the held-out loss gets worse: the best epoch is kept
    and training stops after ``patience`` epochs without improvement."""
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(4, 16), nn.ReLU())
    x, y = _toy(200, 2)
    fit = train_ceiling(
        head, x, y, 2, epochs=20, lr=5.0, batch_size=16, holdout=0.25, patience=2, seed=0
    )
    losses = [h["holdout_loss"] for h in fit.history[1:]]
    assert fit.epochs_run < 20
    assert fit.history[fit.best_epoch]["holdout_loss"] == min(losses)
    assert fit.epochs_run - fit.best_epoch == 2


def test_config_rejects_bad_ridge_alphas():
    from pipeline.config import ConfigError, build
    from pipeline.diagnose.config import DiagnoseConfig

    with pytest.raises(ConfigError, match=r"diagnose\.ridge_alphas"):
        build(DiagnoseConfig, {"ridge_alphas": [1.0, 0.0]}, "diagnose")
    with pytest.raises(ConfigError, match=r"diagnose\.ceiling_holdout"):
        build(DiagnoseConfig, {"ceiling_holdout": 1.0}, "diagnose")


def test_ridge_predictions_are_sklearns_ridge_on_standardised_inputs():
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    from pipeline.diagnose.measures import ridge_predictions

    rng = np.random.default_rng(3)
    for n, f in ((50, 7), (6, 11)):  # more rows than inputs (primal), fewer (dual)
        x, y = rng.normal(size=(n, f)) * np.arange(1, f + 1), rng.normal(size=(n, 2))
        xt = rng.normal(size=(9, f))
        ours = ridge_predictions(x, y, xt, (0.5, 20.0))
        for alpha, pred in zip((0.5, 20.0), ours, strict=True):
            sc = StandardScaler().fit(x)
            ref = Ridge(alpha=alpha).fit(sc.transform(x), y).predict(sc.transform(xt))
            assert_close_rel(pred, ref, rel=1e-5)
