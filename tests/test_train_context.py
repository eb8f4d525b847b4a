"""What tells context learning apart (issues 23, 24): the overlap split of the held-out
explained share, the frozen-feature baseline and the fine-tuning gain, context-only epochs
read from the target cache, model selection among trained epochs, the shuffled-pairs
control and layer-normalised targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.boxes import pair_iou
from pipeline.pairs.overlap import OVERLAP_IOU, explained_share, split_explained
from pipeline.runner import stage_script
from pipeline.train.data import PairDataset, layer_norm_rows, shuffled_tops
from pipeline.train.methods.scn import SCNMethod, evaluate
from pipeline.train.model import load_trained
from tests.test_train_stage import SIZE, _params, _prepare

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- overlap


def test_pair_ious_and_overlap_split_against_a_hand_made_case():
    top = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], float)
    bottom = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10], [30, 30, 40, 40]], float)
    ious = pair_iou(top, bottom)
    np.testing.assert_allclose(ious, [1.0, 50 / 150, 0.0, 0.0])
    # targets (4, 2); the first two pairs overlap, the last two do not
    y = np.array([[1.0, 0.0], [3.0, 2.0], [0.0, 1.0], [2.0, 5.0]])
    # overlapping pairs predicted exactly; the others by their own mean (explained 0)
    y_hat = np.array([[1.0, 0.0], [3.0, 2.0], [1.0, 3.0], [1.0, 3.0]])
    out = split_explained(y, y_hat, ious)
    assert out["overlap"] == 1.0
    assert out["nonoverlap"] == pytest.approx(0.0, abs=1e-12)
    assert out["share_overlap"] == 0.5
    sst = ((y - y.mean(0)) ** 2).sum()
    assert out["all"] == pytest.approx(1 - ((y - y_hat) ** 2).sum() / sst)
    assert out["all"] == explained_share(y, y_hat)
    # a subset with fewer than 2 pairs has no variance to explain
    one = split_explained(y[:3], y_hat[:3], np.array([0.5, 0.5, 0.0]))
    assert np.isnan(one["nonoverlap"])


def test_evaluate_splits_the_held_out_loss_by_overlap(tmp_path):
    """evaluate's per-subset losses are the per-pair losses averaged over the pairs whose
    patches overlap (IoU >= 0.05) and over the others, computed here by hand."""
    params = _params(tmp_path, "fc")
    _prepare(tmp_path, params)
    method = _method(tmp_path, params)
    ds = method.test_set
    over = ds.pair_iou >= OVERLAP_IOU
    assert over.any() and (~over).any()  # the tiny scenes hold both kinds
    out = evaluate(method.model, ds, torch.device("cpu"), True)
    with torch.no_grad():
        batch = ds[np.arange(len(ds))]
        h3 = method.model(batch["x"], batch["offset"], True)
        per_pair = (batch["target"] - h3).pow(2).sum(1).double().numpy()
    assert out["loss"] == pytest.approx(per_pair.mean(), rel=1e-5)
    assert out["loss_overlap"] == pytest.approx(per_pair[over].mean(), rel=1e-5)
    assert out["loss_nonoverlap"] == pytest.approx(per_pair[~over].mean(), rel=1e-5)


def _method(tmp_path, params) -> SCNMethod:
    """The train stage's SCN method, its context module initialised from ``train.seed``."""
    from pipeline.seed import seed_everything
    from pipeline.train.methods.scn import build_method

    seed_everything(params.train.seed)
    return build_method(params.dataset_ref, params.backbone, params.network, params.train,
                        ("train", "test"), params.paths)  # fmt: skip


# ----------------------------------------------------------------------------- cached h1


def test_cached_h1_gives_the_losses_of_the_frozen_head(tmp_path):
    """While the bottom stream is frozen, h1 read from the target cache gives the held-out
    loss and one epoch's training loss of running the head, up to float rounding (at a
    step size where SGD on the summed loss is stable, so rounding does not grow)."""
    params = _params(tmp_path, "fc", epochs=1, lr=1e-5, context_warmup_epochs=1)
    _prepare(tmp_path, params)
    method = _method(tmp_path, params)
    assert method.cached_h1_exact
    device = torch.device("cpu")
    ran = evaluate(method.model, method.test_set, device, True, h1_cached=False)
    read = evaluate(method.model, method.test_set, device, True, h1_cached=True)
    for key in ("loss", "loss_overlap", "loss_nonoverlap", "h3_var"):
        assert read[key] == pytest.approx(ran[key], rel=1e-4), key
    assert read["h1_drift"] == 0.0

    class RunsTheHead(SCNMethod):
        cached_h1_exact = False

    from pipeline.train.loop import fit

    fast = fit(_method(tmp_path, params), params.train)
    slow_method = _method(tmp_path, params)
    slow_method.__class__ = RunsTheHead
    slow = fit(slow_method, params.train)
    for key in ("train_loss", "test_loss", "test_explained_nonoverlap"):
        a, b = fast.history[0][key], slow.history[0][key]
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6 * abs(fast.history[0]["test_loss"]))


# ----------------------------------------------------------------------------- baseline


@pytest.mark.slow
def test_frozen_baseline_leaves_the_bottom_stream_bit_identical(tmp_path):
    """The frozen baseline runs before the SCN on its model and restores it: model.pt and
    every SCN metric are the same, byte for byte and key for key, with it or without it;
    its first epoch is the SCN's warm-up epoch (same initial context module, same batches);
    the fine-tuning gain is the SCN's share minus the baseline's."""
    x = torch.randn(2, 3, SIZE, SIZE)
    regime = {"epochs": 2, "lr": 1e-3, "context_warmup_epochs": 1, "resume": False}
    params = _params(tmp_path, "fc", frozen_baseline=False, **regime)
    _prepare(tmp_path, params)
    without = stage_script("train")(params)
    first = torch.load(tmp_path / "train" / "model.pt", map_location="cpu", weights_only=True)
    features = load_trained(tmp_path / "train" / "model.pt").features(x)
    with_it = stage_script("train")(_params(tmp_path, "fc", frozen_baseline=True, **regime))
    second = torch.load(tmp_path / "train" / "model.pt", map_location="cpu", weights_only=True)
    assert second["config"]["train"].pop("frozen_baseline") is True
    assert first["config"]["train"].pop("frozen_baseline") is False
    assert _same(first, second)  # every tensor bit for bit, every other value equal
    assert torch.equal(load_trained(tmp_path / "train" / "model.pt").features(x), features)
    for key, value in without.items():
        if key not in ("seconds", "pairs_per_s", "epoch_seconds"):  # wall clock
            assert with_it[key] == value or (value != value and with_it[key] != with_it[key]), key
    assert "frozen_test_explained" not in without
    frozen = with_it["frozen_history"]
    scn_history = load_trained(tmp_path / "train" / "model.pt").config["history"]
    assert frozen[0]["test_explained"] == scn_history[0]["test_explained"]
    assert frozen[0]["h1_drift"] == 0.0 and len(frozen) == 2
    assert with_it["finetune_gain_nonoverlap"] == pytest.approx(
        with_it["test_explained_nonoverlap"] - with_it["frozen_test_explained_nonoverlap"]
    )
    assert with_it["finetune_gain"] == pytest.approx(
        with_it["test_explained"] - with_it["frozen_test_explained"]
    )


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b or (a != a and b != b)  # NaN equals NaN here


def test_selection_picks_only_epochs_in_which_the_bottom_stream_trained(tmp_path):
    """With a context warm-up, select: best never keeps a warm-up epoch (whose h1 is the
    original network's) unless every epoch is one, and then says so."""
    params = _params(tmp_path, "fc", epochs=3, lr=0.1, context_warmup_epochs=2,
                     select="best", frozen_baseline=False)  # fmt: skip
    _prepare(tmp_path, params)
    metrics = stage_script("train")(params)
    history = load_trained(tmp_path / "train" / "model.pt").config["history"]
    assert len(history) == 3
    assert metrics["selected_epoch"] == metrics["best_epoch"] == 3
    assert metrics["selected_is_original"] is False
    only_warmup = stage_script("train")(
        _params(
            tmp_path,
            "fc",
            epochs=2,
            lr=0.1,
            context_warmup_epochs=2,
            select="best",
            frozen_baseline=False,
        )
    )
    assert only_warmup["selected_is_original"] is True


# ----------------------------------------------------------------------------- control


def test_shuffled_tops_never_pair_an_image_with_itself():
    rng = np.random.default_rng(0)
    n_images = 40
    counts = rng.integers(1, 20, n_images)
    pair_image = np.repeat(np.arange(n_images), counts)
    top = np.arange(len(pair_image)) + 1000  # one distinct top patch per pair
    top_image = dict(zip(top.tolist(), pair_image.tolist(), strict=True))
    out = shuffled_tops(top, pair_image, seed=3)
    assert sorted(out.tolist()) == sorted(top.tolist())  # a permutation: counts unchanged
    assert all(top_image[t] != i for t, i in zip(out.tolist(), pair_image.tolist(), strict=True))
    np.testing.assert_array_equal(out, shuffled_tops(top, pair_image, seed=3))  # seeded
    assert not np.array_equal(out, shuffled_tops(top, pair_image, seed=4))
    with pytest.raises(ValueError, match="half of the pairs"):
        shuffled_tops(np.arange(5), np.array([0, 0, 0, 1, 1]), seed=0)


def test_shuffled_control_keeps_offsets_and_bottoms_and_the_held_out_pairs_real(tmp_path):
    params = _params(tmp_path, "fc", pairs="shuffled")
    _prepare(tmp_path, params)
    real = _method(tmp_path, _params(tmp_path, "fc"))
    control = _method(tmp_path, params)
    tr, tc = real.train_set, control.train_set
    np.testing.assert_array_equal(tc.bottom, tr.bottom)
    np.testing.assert_array_equal(tc.offset, tr.offset)
    assert sorted(tc.top.tolist()) == sorted(tr.top.tolist())
    assert (tc.patch_image[tc.top] != tc.patch_image[tc.bottom]).all()
    np.testing.assert_array_equal(control.test_set.top, real.test_set.top)
    metrics = stage_script("train")(params)
    assert metrics["pairs"] == "shuffled" and np.isfinite(metrics["test_explained"])


# ----------------------------------------------------------------------------- targets


def test_layer_norm_targets(tmp_path):
    x = np.random.default_rng(0).normal(3.0, 5.0, size=(6, 40))
    y = layer_norm_rows(x)
    np.testing.assert_allclose(y.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(1), 1, rtol=1e-3)
    ref = torch.nn.functional.layer_norm(torch.from_numpy(x), (40,)).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    params = _params(tmp_path, "fc", target="layer_norm")
    _prepare(tmp_path, params)
    ds = PairDataset(tmp_path / "pairs" / "test.h5", tmp_path / "targets" / "test.h5",
                     target_norm="layer_norm")  # fmt: skip
    batch = ds[np.arange(len(ds))]
    np.testing.assert_allclose(batch["target"].mean(1).numpy(), 0, atol=1e-4)
    metrics = stage_script("train")(params)
    assert metrics["target"] == "layer_norm" and np.isfinite(metrics["frozen_test_explained"])
