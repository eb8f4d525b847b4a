"""YOLO proposals: offline training on a tiny VOC dataset, then mining, no network."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.artifacts import YOLO_MARKER, YOLO_WEIGHTS
from pipeline.config import ConfigError, build
from pipeline.data.voc import open_split
from pipeline.errors import DataError
from pipeline.params import Params
from pipeline.proposals import yolo
from pipeline.proposals.config import YoloConfig
from pipeline.proposals.stage import PROPOSAL_METHODS
from pipeline.runner import stage_script


def make_params(
    tmp_path: Path, tiny_voc: Path | None = None, proposal="yolo", **yolo_cfg
) -> Params:
    data = {"scenes_root": str(tiny_voc.parent.parent)} if tiny_voc else {}
    return build(
        Params,
        {
            "proposal": proposal,
            "paths": {"proposals": str(tmp_path / "proposals"), "metrics": str(tmp_path / "m")},
            "data": data,
            "proposals": {
                "yolo": {
                    "epochs": 1,
                    "imgsz": 64,
                    "batch": 4,
                    "workers": 0,
                    "device": "cpu",
                    **yolo_cfg,
                }
            },
        },
    )


@pytest.fixture
def no_network(monkeypatch):
    """Record (and refuse) every attempt to resolve a host or open a connection."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_yolo_labels_are_normalised_centre_size():
    rows = yolo.to_yolo_labels(np.array([[10, 20, 50, 60]]), np.array([3]), 100, 200)
    np.testing.assert_allclose(rows, [[3, 0.3, 0.2, 0.4, 0.2]])


def test_method_is_registered():
    assert PROPOSAL_METHODS["yolo"] is yolo.propose


def test_config_refuses_bad_imgsz_and_device():
    with pytest.raises(ConfigError, match=r"proposals.yolo.imgsz: 100"):
        build(YoloConfig, {"imgsz": 100}, "proposals.yolo")
    with pytest.raises(ConfigError, match=r"proposals.yolo.device: 'gpu'"):
        build(YoloConfig, {"device": "gpu"}, "proposals.yolo")


def test_stage_writes_only_a_marker_when_yolo_is_not_used(tmp_path):
    params = make_params(tmp_path, proposal="edgebox")
    metrics = stage_script("yolo")(params)
    assert metrics["trained"] is False and "neither is 'yolo'" in metrics["reason"]
    assert sorted(p.name for p in params.paths.yolo_dir.iterdir()) == [YOLO_MARKER]
    assert yolo.read_marker(params.paths.yolo_dir)["trained"] is False
    user = tmp_path / "user.pt"
    user.write_bytes(b"x")
    metrics = stage_script("yolo")(make_params(tmp_path, weights=str(user)))
    assert metrics["trained"] is False and "weights is given" in metrics["reason"]


def test_missing_or_broken_weights_name_the_file(tmp_path, tiny_voc):
    params = make_params(tmp_path, tiny_voc)
    ds = open_split(params.dataset_ref, "test")
    with pytest.raises(DataError, match=r"yolo/weights.pt: no trained YOLO weights"):
        yolo.propose(ds, params.proposals, "test")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"bad.pt: not a loadable YOLO checkpoint"):
        yolo.propose(ds, make_params(tmp_path, tiny_voc, weights=str(bad)).proposals, "test")


@pytest.mark.slow
def test_train_one_epoch_offline_then_mine_boxes(tmp_path, tiny_voc, no_network, caplog):
    params = make_params(tmp_path, tiny_voc, conf=0.0, max_det=7)
    with caplog.at_level("INFO", logger="pipeline.proposals.yolo"):
        metrics = stage_script("yolo")(params)
    weights = params.paths.yolo_dir / YOLO_WEIGHTS
    assert metrics["trained"] is True and weights.is_file()
    assert metrics["images"] == 4 and metrics["boxes"] > 0 and len(metrics["weights_sha256"]) == 64
    # progress: one log line per epoch with its losses (ultralytics' own output is captured)
    assert [m for m in caplog.messages if m.startswith("yolo epoch 1/1: box_loss ")]
    marker = json.loads((params.paths.yolo_dir / YOLO_MARKER).read_text())
    assert marker["trained"] is True and metrics["train_seconds"] > 0
    assert "train_seconds" not in marker  # a dependency of the proposal stages: no timings
    import torch

    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    assert ckpt["date"] is None and "time" not in ckpt["train_results"]
    assert "scn-yolo-" not in json.dumps(ckpt["train_args"])  # no temporary folder
    assert not list(params.paths.yolo_dir.parent.glob("*.tmp-*"))

    ds = open_split(params.dataset_ref, "test")
    cfg = params.proposals  # the proposals stage runs the yolo stage's weights when unset
    props = yolo.propose(ds, replace(cfg, yolo=replace(cfg.yolo, weights=weights)), "test")
    assert props.image_ids == ds.ids and props.provenance["method"] == "yolo"
    assert props.provenance["weights_sha256"] == metrics["weights_sha256"]
    assert props.n_boxes > 0  # conf=0 keeps the untrained detector's best boxes
    for im, b, s in zip(ds, props.boxes, props.scores, strict=True):
        assert b.dtype == np.float32 and b.shape[1] == 4 and len(b) <= 7
        assert np.all(b[:, 2] > b[:, 0]) and np.all(b[:, 3] > b[:, 1])  # (x1, y1, x2, y2)
        assert (
            np.all(b[:, [0, 1]] >= 0)
            and np.all(b[:, 2] <= im.width)
            and np.all(b[:, 3] <= im.height)
        )
        assert np.all(np.diff(s) <= 0)  # best first
    assert no_network == []  # nothing tried the network


def test_unused_marker_is_the_same_for_every_other_method(tmp_path):
    """The marker is a dependency of the proposal stages: switching between non-YOLO
    methods must leave it byte-identical, so detect_proposals does not rerun."""
    texts = set()
    for method in ("edgebox", "bbox", "random"):
        params = make_params(tmp_path, proposal=method)
        stage_script("yolo")(params)
        texts.add((params.paths.yolo_dir / YOLO_MARKER).read_bytes())
    assert len(texts) == 1
