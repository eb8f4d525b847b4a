"""The train stage end to end on a tiny VOC dataset: trunk cache and image paths."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from pipeline.backbones import build_backbone
from pipeline.boxes import corner_offsets
from pipeline.config import build
from pipeline.data.voc import open_split
from pipeline.errors import DataError
from pipeline.params import Params
from pipeline.runner import stage_script
from pipeline.targets.cache import build_targets, read_patches
from pipeline.train.model import load_trained
from tests.helpers.toy_train import write_pairs
from tests.helpers.voc import write_tiny_voc

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 64


def _params(tmp_path, scope: str, **train) -> Params:
    cfg = {
        "epochs": 2, "batch_size": 8, "lr": 1e-4, "lr_step_epoch": 1, "hidden": 16,
        "loss": "sum", "device": "cpu", **train,
    }  # fmt: skip
    return build(
        Params,
        {
            "dataset": "scenes",
            "backbone": "efficientnet_lite0",
            "paths": {k: str(tmp_path / k) for k in ("pairs", "targets", "train", "plots",
                                                     "metrics")},
            "data": {"scenes_root": str(tmp_path / "scenes")},
            "network": {"input_size": SIZE, "scope": scope},
            "train": cfg,
        },
    )  # fmt: skip


def _prepare(tmp_path, params: Params, trunk_cache: bool = True) -> None:
    """Pairs of ground-truth boxes and their target cache, built with the project's code."""
    if not (tmp_path / "scenes").exists():
        write_tiny_voc(tmp_path / "scenes", n_images=8, size=96)
    bb = build_backbone("efficientnet_lite0", input_size=SIZE)
    for split in ("train", "test"):
        ds = open_split(params.dataset_ref, split)
        ids, sizes, p_img, p_box, top, bottom, off = [], [], [], [], [], [], []
        for im in ds:
            boxes = im.boxes()
            base = len(p_box)
            ids.append(im.id)
            sizes.append((im.width, im.height))
            p_img += [len(ids) - 1] * len(boxes)
            p_box += list(boxes)
            for i in range(len(boxes)):
                for j in range(len(boxes)):
                    if i != j:
                        top.append(base + i)
                        bottom.append(base + j)
                        off.append(corner_offsets(boxes[i : i + 1], boxes[j : j + 1],
                                                im.width, im.height, "image")[0])  # fmt: skip
        pairs = write_pairs(tmp_path / "pairs" / f"{split}.h5", ids, np.array(sizes),
                            np.array(p_img), np.array(p_box), np.array(top), np.array(bottom),
                            np.array(off))  # fmt: skip
        build_targets(read_patches(pairs), {im.id: im.path for im in ds},
                      tmp_path / "targets" / f"{split}.h5", bb, scope=params.network.scope,
                      trunk_cache=trunk_cache, batch_size=16, workers=0, device="cpu")  # fmt: skip


def metrics_history(out) -> list[dict]:
    return load_trained(out / "model.pt").config["history"]


@pytest.mark.parametrize(("scope", "trunk_cache"), [("fc", True), ("fc", False)])
def test_drift_is_zero_before_training_and_measured_against_the_cache(tmp_path, scope, trunk_cache):
    """h1 of an untrained bottom stream is the cached representation of its patch: the
    drift metric compares each held-out bottom patch with its own cache row."""
    params = _params(tmp_path, scope, epochs=1, lr=1e-12)
    _prepare(tmp_path, params, trunk_cache)
    metrics = stage_script("train")(params)
    assert metrics["h1_drift"] < 1e-4
    assert metrics["h1_norm_ratio"] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(("scope", "trunk_cache", "source"),
                         [("fc", True, "trunk"), ("all", False, "image")])  # fmt: skip
def test_stage_writes_model_plots_and_metrics(tmp_path, scope, trunk_cache, source):
    params = _params(tmp_path, scope)
    _prepare(tmp_path, params, trunk_cache)
    metrics = stage_script("train")(params)
    assert metrics["source"] == source and metrics["epochs"] == 2
    assert metrics["resumed_from_epoch"] == 0 and metrics["device"] == "cpu"
    assert np.isfinite(metrics["train_loss"]) and np.isfinite(metrics["test_loss"])
    assert metrics["pairs_per_s"] > 0 and metrics["train_pairs"] > 0
    out = tmp_path / "train"
    assert (out / "checkpoint.pt").is_file()
    rows = list(csv.DictReader(open(tmp_path / "plots" / "train_loss.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["lr"]) == pytest.approx(1e-5)  # stepped after epoch 1
    # wall-clock per epoch: in the metrics only, so the plot's bytes are the same run to run
    assert "seconds" not in rows[0] and all(s > 0 for s in metrics["epoch_seconds"])
    assert (tmp_path / "plots" / "train_loss.png").read_bytes()[:4] == b"\x89PNG"
    trained = load_trained(out / "model.pt")
    assert trained.config["provenance"]["source"] == source
    assert trained.config["train"]["hidden"] == 16
    json.dumps(trained.config["provenance"])  # JSON-safe provenance
    x = torch.randn(2, 3, SIZE, SIZE)
    original = build_backbone("efficientnet_lite0", input_size=SIZE).features(x)
    assert trained.features(x).shape == original.shape
    assert not torch.allclose(trained.features(x), original)  # the bottom stream trained

    # the bottom stream moved away from the network it started as, measured on held-out h1
    assert metrics["h1_drift"] > 0 and metrics["h1_norm_ratio"] > 0
    assert [r["h1_drift"] for r in rows] == [str(h["h1_drift"]) for h in metrics_history(out)]

    # resume: two more epochs continue the checkpoint instead of starting over
    more = stage_script("train")(_params(tmp_path, scope, epochs=3))
    assert more["resumed_from_epoch"] == 2 and more["epochs"] == 3


# the second: stops after epoch 4 and keeps epoch 3 (test_metrics_record_the_model_selection)
@pytest.mark.parametrize(
    "regime", [{}, {"select": "best", "early_stop_patience": 1, "epochs": 5, "lr": 0.1}]
)
def test_model_file_content_is_identical_across_runs_and_resumes(tmp_path, regime):
    """Same seed, same model.pt and checkpoint.pt: every tensor and metadata value (no
    wall-clock times) and every byte, whether the run started from scratch or resumed
    from its final checkpoint (pickle refers back to repeated strings by identity: a
    history loaded from the checkpoint must not change the bytes). DVC hashes the bytes:
    a rerun of train after an interruption must not rerun classify and detect. Also with
    model selection, whose checkpoint carries the best weights so far."""
    import hashlib
    import shutil

    def digests():
        return [hashlib.sha256((tmp_path / "train" / f).read_bytes()).hexdigest()
                for f in ("model.pt", "checkpoint.pt")]  # fmt: skip

    def content(path):
        return torch.load(path, map_location="cpu", weights_only=True)

    def same(a, b):
        if isinstance(a, dict):
            return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
        if isinstance(a, list):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
        if isinstance(a, torch.Tensor):
            return torch.equal(a, b)
        return a == b

    params = _params(tmp_path, "fc", **regime)
    _prepare(tmp_path, params, True)
    stage_script("train")(params)
    first, first_bytes = content(tmp_path / "train" / "model.pt"), digests()
    assert all("seconds" not in r for r in first["history"])
    ckpt = torch.load(tmp_path / "train" / "checkpoint.pt", weights_only=False)  # numpy RNG
    assert all("seconds" not in r for r in ckpt["history"])
    stage_script("train")(params)  # resumes from the final checkpoint, rewrites model.pt
    assert same(content(tmp_path / "train" / "model.pt"), first)
    assert digests() == first_bytes
    shutil.rmtree(tmp_path / "train")
    stage_script("train")(params)  # from scratch
    assert same(content(tmp_path / "train" / "model.pt"), first)
    assert digests() == first_bytes


def test_context_warmup_keeps_the_real_bottom_stream_as_it_was(tmp_path):
    """EfficientNet's head with frozen BatchNorm: after a warm-up epoch model.pt's bottom
    stream computes exactly the original features while the context module has learnt;
    one more epoch (resumed) moves them."""
    x = torch.randn(2, 3, SIZE, SIZE)
    original = build_backbone("efficientnet_lite0", input_size=SIZE).features(x)  # (2, D)
    params = _params(tmp_path, "fc", epochs=1, lr=1e-3, context_warmup_epochs=1)
    _prepare(tmp_path, params)
    metrics = stage_script("train")(params)
    assert torch.equal(load_trained(tmp_path / "train" / "model.pt").features(x), original)
    assert metrics["h1_drift"] < 1e-4  # the cache's rounding only, as before training
    assert metrics["h3_spread"] > 0  # h3 varies with h1 and the offset: the context learnt
    more = stage_script("train")(_params(tmp_path, "fc", epochs=2, lr=1e-3,
                                         context_warmup_epochs=1))  # fmt: skip
    assert more["resumed_from_epoch"] == 1
    assert not torch.equal(load_trained(tmp_path / "train" / "model.pt").features(x), original)
    assert more["h1_drift"] > 10 * metrics["h1_drift"]


def test_metrics_record_the_model_selection(tmp_path):
    """metrics/train.json: the best held-out epoch and score, the epoch model.pt holds
    (its entries are that epoch's), the epochs run and whether the run stopped early."""
    params = _params(tmp_path, "fc", epochs=5, lr=0.1)  # overshoots after a few epochs
    _prepare(tmp_path, params)
    last = stage_script("train")(params)
    history = metrics_history(tmp_path / "train")
    scores = [h["test_explained"] for h in history]
    best = int(np.argmax(scores)) + 1
    assert best < 4  # the case to select in: later epochs are worse
    assert last["best_epoch"] == best and last["best_test_explained"] == max(scores)
    assert (last["selected_epoch"], last["epochs"], last["epochs_run"]) == (5, 5, 5)
    assert last["stopped_early"] is False and last["test_explained"] == scores[-1]
    chosen = stage_script("train")(
        _params(tmp_path, "fc", epochs=5, lr=0.1, select="best", early_stop_patience=1)
    )
    assert chosen["resumed_from_epoch"] == 0  # another regime: another checkpoint key
    assert chosen["best_epoch"] == chosen["selected_epoch"] == best
    assert chosen["test_explained"] == chosen["best_test_explained"] == max(scores)
    assert chosen["h1_drift"] == history[best - 1]["h1_drift"]
    assert chosen["epochs_run"] == best + 1 and chosen["stopped_early"] is True
    assert len(metrics_history(tmp_path / "train")) == best + 1  # model.pt: every epoch run
    json.dumps(chosen)


def test_stage_refuses_targets_of_another_configuration(tmp_path):
    params = _params(tmp_path, "fc")
    _prepare(tmp_path, params)
    with pytest.raises(DataError, match="scope"):
        stage_script("train")(_params(tmp_path, "fc+conv5"))
