"""The diagnose stage end to end on tiny generated scenes, through the real proposals,
pairs and targets stages and the real backbone at a tiny input size."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.config import build
from pipeline.data.config import ScenesConfig
from pipeline.data.scenes import generate_scenes
from pipeline.errors import DataError
from pipeline.params import Params
from pipeline.runner import run_stage

pytestmark = pytest.mark.usefixtures("one_thread")

# bird and wheel are left unannotated: at 128 px their 10 train images hold only difficult
# ones, and the low-shot protocol skips every k above a class's positives
CLASSES = ("sun", "cloud", "tree", "house", "window", "car", "ball", "plate")
SCENES = ScenesConfig(n_train=10, n_val=1, n_test=10, image_size=128, classes=CLASSES)


def make_params(root: Path, **diagnose) -> Params:
    return build(
        Params,
        {
            "dataset": "scenes",
            "proposal": "edgebox",
            "paths": {k: str(root / k) for k in ("proposals", "pairs", "targets", "metrics",
                                                 "plots")},
            "data": {"scenes_root": str(root / "scenes")},
            "scenes": {"n_train": SCENES.n_train, "n_val": SCENES.n_val,
                       "n_test": SCENES.n_test, "image_size": SCENES.image_size,
                       "classes": list(CLASSES)},
            "proposals": {"workers": 1, "edgebox": {"max_boxes": 6}},
            "pairs": {"max_pairs_per_image": 6},
            "network": {"input_size": 64},
            "targets": {"batch_size": 32, "workers": 0, "device": "cpu"},
            "classify": {"costs": [0.1, 1.0], "cv_folds": 2, "lowshot_k": [1, 500],
                         "lowshot_samples": 2},
            "diagnose": {"ceiling_epochs": 2, "max_pairs": 300, "device": "cpu", "workers": 1,
                         **diagnose},
        },
    )  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("diagnose")
    generate_scenes(root / "scenes", SCENES)
    params = make_params(root)
    for stage in ("proposals", "pairs", "targets"):
        run_stage(stage, params)
    return root


@pytest.mark.slow
def test_stage_end_to_end(workspace):
    params = make_params(workspace)
    objects = run_stage("diagnose_objects", params)
    assert (workspace / "plots" / "diagnose_lowshot.png").stat().st_size > 1000
    assert not (workspace / "plots" / "diagnose.png").exists()  # the proposal part's plot
    metrics = run_stage("diagnose", params)
    on_disk = json.loads((workspace / "metrics" / "details" / "diagnose.json").read_text())
    assert on_disk["stage"] == "diagnose" and on_disk["seconds"] > 0
    # the whole diagnosis in diagnose.json: the ground-truth part exactly as computed once
    for key in ("original", "ceiling", "headroom", "lowshot", "context", "n_objects"):
        assert metrics[key] == objects[key], key
    assert metrics["targets"]["class_gt"] == objects["class_gt"]
    assert set(metrics["phase_seconds"]) == {"proposal_pairs"}
    assert {"trunk", "ceiling", "lowshot"} <= set(metrics["objects_phase_seconds"])
    assert (workspace / "plots" / "diagnose.png").stat().st_size > 1000
    classes = metrics["classes"]
    for net in ("original", "ceiling"):
        assert set(metrics[net]["per_class"]) == set(classes)
        assert metrics[net]["map"] is None or 0 <= metrics[net]["map"] <= 1
    assert metrics["ceiling"]["training"]["epochs_run"] >= 1
    head = metrics["headroom"]
    if metrics["original"]["map"] is not None and metrics["ceiling"]["map"] is not None:
        assert head["map"] == pytest.approx(
            metrics["ceiling"]["map"] - metrics["original"]["map"], abs=1e-5
        )
        # its paired bootstrap interval over the test objects (classify.bootstrap resamples)
        ci = head["map_ci"]
        assert ci["value"] == pytest.approx(head["map"], abs=1e-5) and ci["n_boot"] == 1000
        assert ci["ci_low"] <= ci["bootstrap_mean"] <= ci["ci_high"]
        assert ci["half_width"] == pytest.approx((ci["ci_high"] - ci["ci_low"]) / 2, abs=1e-6)
        assert (ci["verdict"] == "no measurable difference") == (ci["ci_low"] <= 0 <= ci["ci_high"])
    ctx = metrics["context"]
    assert 0 <= ctx["accuracy"] <= 1 and 0 < ctx["majority_rate"] <= 1
    assert ctx["ratio"] == pytest.approx(ctx["accuracy"] / ctx["majority_rate"], rel=1e-4)
    t = metrics["targets"]
    for key in ("class_gt", "oracle_proposals", "ridge_h1_offset", "ridge_h1", "ridge_offset"):
        assert t[key] is not None and t[key] <= 1, key
    assert set(t["n_proposal_pairs"]) == {"fit", "test"} and t["n_proposal_pairs"]["test"] > 0
    assert set(t["ridge_alpha"]) == {"ridge_h1_offset", "ridge_h1", "ridge_offset"}
    # every share also on the overlapping and the non-overlapping test pairs (issue 23)
    assert 0 <= t["test_share_overlapping"] <= 1
    assert t["context_frozen"] is not None and t["context_frozen"] <= 1
    assert 1 <= t["context_frozen_epoch"] <= 15
    for key in ("ridge_h1_offset", "oracle_proposals", "context_frozen"):
        for sub in ("overlap", "nonoverlap"):
            assert t[f"{key}_{sub}"] is None or t[f"{key}_{sub}"] <= 1, (key, sub)
    assert t["ridge_h1_offset_nonoverlap"] is not None
    for split in ("train", "test"):
        q = metrics["proposals"][split]
        assert q["patches"] > 0 and q["pairs"] > 0
        assert 0 <= q["share_patches_matching"] <= 1 and 0 <= q["share_pairs_low_iou"] <= 1
        assert 0 <= q["share_pairs_overlapping"] <= 1
    assert metrics["n_objects"]["train"] == metrics["n_objects_total"]["train"]
    # low-shot Obj for the original and the ceiling on the same draws (k 500 is skipped)
    low = metrics["lowshot"]
    assert low["k"] == [1, 500] and low["n_samples"] == 2
    res = low["settings"]["obj"]
    assert res["k"] == [1] and "500" in res["skipped_k"]
    for net in ("original", "ceiling"):
        assert len(res[net]["maps"]) == 1 and len(res[net]["maps"][0]) == 2
        assert all(0 <= m <= 1 for m in res[net]["maps"][0])


@pytest.mark.slow
def test_object_cap_is_applied_and_another_setting_is_refused(workspace, tmp_path):
    params = make_params(workspace, max_objects=12, ceiling_epochs=1)
    metrics = run_stage("diagnose_objects", params)
    assert 0 < metrics["n_objects"]["train"] <= 12 < metrics["n_objects_total"]["train"]
    assert run_stage("diagnose", params)["n_objects"] == metrics["n_objects"]
    # ground-truth metrics of another input size: named, with what differs
    other = make_params(workspace)
    other = replace(other, network=replace(other.network, input_size=96))
    other_size = r"diagnose_objects\.json: made with other settings \(input_size: 64 there, 96 now"
    with pytest.raises(DataError, match=other_size):
        run_stage("diagnose", other)
    gone = make_params(tmp_path)
    gone = replace(gone, paths=replace(gone.paths, pairs=workspace / "pairs",
                                       targets=workspace / "targets"))  # fmt: skip
    with pytest.raises(DataError, match=r"diagnose_objects\.json.*run the diagnose_objects"):
        run_stage("diagnose", gone)


def test_missing_caches_name_the_file(tmp_path):
    """Checked before any costly work: the missing file is named."""
    params = make_params(tmp_path)
    with pytest.raises(DataError, match=r"pairs[/\\]train\.h5.*run the pairs stage"):
        run_stage("diagnose", params)
    for split in ("train", "test"):
        (tmp_path / "pairs").mkdir(exist_ok=True)
        (tmp_path / "pairs" / f"{split}.h5").write_bytes(b"")
    with pytest.raises(DataError, match=r"targets[/\\]train\.h5.*run the targets stage"):
        run_stage("diagnose", params)
