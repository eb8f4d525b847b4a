"""The proposals / detect_proposals stages end to end on tiny data, and the recall metric."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.config import ConfigError
from pipeline.params import load_params
from pipeline.proposals.stage import recall_at, unique_splits
from pipeline.proposals.store import read_proposals
from pipeline.runner import run_stage


def test_recall_on_a_hand_case():
    gt = [
        np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32),
        np.array([[0, 0, 4, 4]], np.float32),
        np.zeros((0, 4), np.float32),  # no ground truth: does not count
    ]
    props = [
        np.array([[0, 0, 10, 10], [20, 20, 30, 36]], np.float32),  # IoU 1.0 and 100/160
        np.zeros((0, 4), np.float32),  # no proposals: its box is missed
        np.array([[0, 0, 5, 5]], np.float32),
    ]
    r = recall_at(gt, props)
    assert r[0.5] == pytest.approx(2 / 3)  # 1.0 and 0.625 pass 0.5
    assert r[0.7] == pytest.approx(1 / 3)  # only the exact box passes 0.7
    assert np.isnan(recall_at([np.zeros((0, 4))], [np.zeros((0, 4))])[0.5])


def test_unique_splits_keep_order():
    assert unique_splits("train", "test") == ["train", "test"]
    assert unique_splits("test", "test") == ["test"]


def _write_params(tmp_path, tiny_voc, **top) -> str:
    data = yaml.safe_load(open(Path(__file__).resolve().parents[1] / "params.yaml"))
    data["data"]["scenes_root"] = str(tiny_voc.parent.parent)
    data["data"]["scn_split"] = "train"  # the tiny folder has no unlabelled split
    data["paths"] = {k: str(tmp_path / "out" / k) for k in data["paths"]}
    data["proposals"]["edgebox"]["min_size"] = 8
    data.update(top)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_proposals_stage_writes_h5_and_metrics(tmp_path, tiny_voc):
    params_path = _write_params(tmp_path, tiny_voc, proposal="edgebox")
    metrics = run_stage("proposals", params_path)
    out = tmp_path / "out"
    for split, n in (("train", 4), ("test", 4)):
        props = read_proposals(out / "proposals" / f"{split}.h5", expect_method="edgebox")
        assert len(props) == n and props.n_boxes > 0
        assert props.provenance["split"] == split and props.provenance["dataset"] == "scenes"
        assert props.provenance["created_by"] == "proposals"
        assert props.provenance["params"]["proposal"] == "edgebox"
        m = metrics["splits"][split]
        assert m["images"] == n and m["skipped"] == 0
        assert m["boxes_per_image"] == pytest.approx(props.n_boxes / n)
        assert 0 < m["recall_iou0.5"] <= 1 and m["recall_iou0.7"] <= m["recall_iou0.5"]
        assert m["images_per_s"] > 0
    saved = json.loads((out / "metrics" / "details" / "proposals.json").read_text())
    assert saved["method"] == "edgebox" and set(saved["splits"]) == {"train", "test"}


def test_detect_proposals_stage_is_independent_of_the_switch(tmp_path, tiny_voc):
    params_path = _write_params(tmp_path, tiny_voc, proposal="random")
    data = yaml.safe_load(open(params_path))
    data["proposals"]["detect_method"] = "bbox"
    open(params_path, "w").write(yaml.safe_dump(data))
    metrics = run_stage("detect_proposals", params_path)
    out = tmp_path / "out" / "proposals" / "detect"
    assert sorted(p.name for p in out.iterdir()) == ["test.h5", "train.h5"]
    assert metrics["method"] == "bbox"
    assert metrics["splits"]["test"]["recall_iou0.7"] == 1.0  # ground truth covers itself
    assert read_proposals(out / "train.h5").provenance["method"] == "bbox"


def test_unknown_method_is_refused_before_any_work(tmp_path, tiny_voc):
    params_path = _write_params(tmp_path, tiny_voc, proposal="selective_search")
    with pytest.raises(ConfigError, match="proposal: 'selective_search'"):
        load_params(params_path)
    assert not (tmp_path / "out").exists()


def test_too_many_bad_images_fail_the_stage(tmp_path, tiny_voc):
    from pipeline.errors import TooManySkipped

    for i in range(2):
        (tiny_voc / "JPEGImages" / f"00000{i}.jpg").write_bytes(b"broken")
    params_path = _write_params(tmp_path, tiny_voc, proposal="bbox")
    with pytest.raises(TooManySkipped, match="skipped 2 of 4"):
        run_stage("proposals", params_path)
    data = yaml.safe_load(open(params_path))
    data["data"]["max_skip_fraction"] = 0.5
    open(params_path, "w").write(yaml.safe_dump(data))
    metrics = run_stage("proposals", params_path)
    assert metrics["splits"]["train"]["skipped"] == 2
    assert metrics["splits"]["train"]["skipped_reasons"] == {"corrupt_image": 2}
    assert metrics["splits"]["train"]["images"] == 2
