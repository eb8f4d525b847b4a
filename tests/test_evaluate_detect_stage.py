"""The detect stage end to end on tiny data: proposals, model.pt, metrics, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pipeline.config import build
from pipeline.data.voc import VOCDataset
from pipeline.errors import DataError
from pipeline.evaluate.bootstrap import percentile_interval, read_distributions
from pipeline.params import Params
from tests.helpers.voc import TINY_CLASSES, write_tiny_voc


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _write_proposals(year: Path, out: Path, split: str, scale: float = 1.0) -> None:
    """Proposals = jittered ground truth + a few random boxes (documented CSR format)."""
    from pipeline.proposals.base import ProposalSet
    from pipeline.proposals.store import write_proposals

    ds = VOCDataset(year, split, classes=TINY_CLASSES)
    rng = np.random.default_rng(0)
    boxes, scores = [], []
    for im in ds:
        gt = im.boxes()
        jit = gt + rng.normal(0, 3, gt.shape)
        rnd = rng.uniform(0, im.width / 2, (6, 2))
        rnd = np.concatenate([rnd, rnd + rng.uniform(10, im.width / 2, (6, 2))], 1)
        b = np.clip(np.concatenate([gt, jit, rnd]), 0, im.width).astype(np.float32) * scale
        boxes.append(b)
        scores.append(np.linspace(1, 0.1, len(b)).astype(np.float32))
    sizes = np.array([[im.width, im.height] for im in ds], np.int32)
    write_proposals(
        out / "detect" / f"{split}.h5",
        ProposalSet(ds.ids, sizes, boxes, scores, provenance={"method": "edgebox"}),
        {"split": split, "dataset": "scenes", "created_by": "test"},
    )


def _params(tmp_path: Path, **detect) -> Params:
    cfg = {
        "seed": 0, "iterations": 6, "lr": 0.01, "lr_step": 4, "rois_per_image": 8,
        "min_size": 64, "max_size": 128, "train_body": False, "roi_size": 7,
        "frozen_head_layers": 1, "n_examples": 2, "device": "cpu", "threads": 1,
    }  # fmt: skip
    cfg.update(detect)
    data = {
        "dataset": "scenes",
        "backbone": "efficientnet_lite0",
        "paths": {
            k: str(tmp_path / k)
            for k in ("proposals", "train", "detect", "original", "metrics", "plots")
        },
        "data": {"scenes_root": str(tmp_path / "scenes")},
        "network": {"input_size": 64},
        "detect": cfg,
    }
    return build(Params, data)


def _scn_model(path: Path) -> None:
    """A model.pt in the train stage's format whose fc-scope layers differ from ImageNet's."""
    from pipeline.backbones import build_backbone
    from pipeline.train.model import build_scn, save_trained

    bb = build_backbone("efficientnet_lite0", input_size=64)
    scn = build_scn(bb, "fc", bb.feature_dim, hidden=16)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in scn.head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_trained(path, scn, build_backbone("efficientnet_lite0", input_size=64), "fc", {}, {})


@pytest.mark.slow
def test_detect_stage_end_to_end(tmp_path):
    from pipeline.runner import stage_script

    year = write_tiny_voc(tmp_path / "scenes", n_images=8, size=96)
    for split in ("train", "test"):
        _write_proposals(year, tmp_path / "proposals", split)
    _scn_model(tmp_path / "train" / "model.pt")
    params = _params(tmp_path)
    with pytest.raises(DataError, match=r"result\.json: missing"):
        stage_script("detect")(params)  # detect_original has not run
    original = stage_script("detect_original")(params)
    metrics = stage_script("detect")(params)
    from pipeline.evaluate.detect.original import without_wall_clock

    # read from result.json, which has no wall-clock figures (those are in the metrics)
    assert metrics["original"] == without_wall_clock(original["original"])
    for net in ("original", "scn"):
        m = metrics[net]
        assert set(m["per_class"]) == set(TINY_CLASSES)
        assert m["map"] is None or 0.0 <= m["map"] <= 1.0
        assert m["loss_last"] > 0 and np.isfinite(m["loss_last"])
    assert "map_diff" in metrics and "ap_diff" in metrics
    ci = metrics["map_diff_ci"]  # paired bootstrap over the 4 test images
    assert ci["n_boot"] == 1000 and ci["value"] == pytest.approx(metrics["map_diff"], abs=1e-6)
    assert ci["verdict"] in ("gain", "loss", "no measurable difference")
    rec = read_distributions(tmp_path / "detect" / "bootstrap.npz")["det"]
    assert (rec["n_test"], len(rec["diffs"])) == (4, 1000)
    assert percentile_interval(rec["value"], rec["diffs"], 1000).to_dict() == ci
    json.dumps(metrics, allow_nan=False)  # valid strict JSON: NaN became null
    assert metrics["n_test_images"] == original["n_test_images"] == 4
    with h5py.File(tmp_path / "detect" / "detections.h5") as fh:
        assert len(fh["image_ids"]) == 4
        for net in ("original", "scn"):
            off = fh[net]["offsets"][:]
            assert off[0] == 0 and off[-1] == len(fh[net]["boxes"]) == len(fh[net]["scores"])
            assert fh[net]["labels"][:].max(initial=0) < len(TINY_CLASSES)
        with h5py.File(tmp_path / "original" / "detect" / "detections.h5") as orig:
            assert orig.attrs["created_by"] == "detect_original"
            for key in ("offsets", "boxes", "scores", "labels"):
                np.testing.assert_array_equal(orig["original"][key][:], fh["original"][key][:])
    assert (tmp_path / "plots" / "detect_examples.png").stat().st_size > 0
    assert (tmp_path / "detect" / "history.csv").read_text().count("\n") == 1 + 2 * 6
    # the original's results are refused once made with other detect params
    changed = _params(tmp_path, lr=0.02)
    with pytest.raises(DataError, match=r"result\.json: made with other params \(detect\.lr"):
        stage_script("detect")(changed)


def test_same_backbone_twice_gives_identical_results(tmp_path):
    """Identical schedule and seed: the two runs, in two stages, differ only by the
    backbone."""
    from pipeline.backbones import build_backbone
    from pipeline.evaluate.detect.original import run_detect_original
    from pipeline.evaluate.detect.stage import run_detect

    year = write_tiny_voc(tmp_path / "scenes", n_images=6, size=64)
    for split in ("train", "test"):
        _write_proposals(year, tmp_path / "proposals", split)
    bb = build_backbone("efficientnet_lite0", pretrained=False, input_size=64)
    twin = build_backbone("efficientnet_lite0", pretrained=False, input_size=64)
    twin.model.load_state_dict(bb.model.state_dict())
    p = _params(tmp_path, iterations=3, n_examples=0)
    splits = (p.data.eval_train_split, p.data.eval_test_split)
    run_detect_original(
        p.dataset_ref, p.backbone, p.network, p.detect, splits, p.paths, {}, model=bb
    )
    metrics = run_detect(p.dataset_ref, p.backbone, p.detect, splits, p.paths, {}, {}, model=twin)
    a, b = metrics["original"], metrics["scn"]
    assert a["loss_first"] == b["loss_first"] and a["loss_last"] == b["loss_last"]
    assert a["per_class"] == b["per_class"]
    ci = metrics["map_diff_ci"]  # the same detections: exactly 0 on every resample
    assert (ci["value"], ci["ci_low"], ci["ci_high"]) == (0.0, 0.0, 0.0)
    assert (tmp_path / "detect" / "bootstrap.npz").is_file()
    # detect.bootstrap 0: no interval, and the earlier run's resamples are removed
    p0 = _params(tmp_path, iterations=3, n_examples=0, bootstrap=0)
    metrics = run_detect(p0.dataset_ref, p0.backbone, p0.detect, splits, p0.paths, {}, {},
                         model=twin)  # fmt: skip
    assert "map_diff_ci" not in metrics and metrics["map_diff"] == 0.0
    assert not (tmp_path / "detect" / "bootstrap.npz").exists()
    with h5py.File(tmp_path / "detect" / "detections.h5") as fh:
        np.testing.assert_array_equal(fh["original"]["scores"][:], fh["scn"]["scores"][:])


def test_detect_original_writes_the_same_bytes_twice_and_times_only_into_metrics(tmp_path):
    """Two runs of detect_original give byte-identical files (result.json is a dependency
    of stage detect: its wall-clock figures would make DVC see a change, issue 26); the
    seconds are in the returned metrics, which the runner writes to metrics/."""
    from pipeline.backbones import build_backbone
    from pipeline.evaluate.detect.original import WALL_CLOCK_KEYS, run_detect_original

    year = write_tiny_voc(tmp_path / "scenes", n_images=6, size=64)
    for split in ("train", "test"):
        _write_proposals(year, tmp_path / "proposals", split)
    p = _params(tmp_path, iterations=3, n_examples=0)
    splits = (p.data.eval_train_split, p.data.eval_test_split)
    out = p.paths.original_detect_dir
    runs = []
    for _ in range(2):
        bb = build_backbone("efficientnet_lite0", input_size=64)
        metrics = run_detect_original(
            p.dataset_ref, p.backbone, p.network, p.detect, splits, p.paths, {"k": 1}, model=bb
        )
        assert all(metrics["original"][key] > 0 for key in WALL_CLOCK_KEYS)
        runs.append({f.name: f.read_bytes() for f in sorted(out.iterdir())})
    assert sorted(runs[0]) == ["detections.h5", "history.csv", "result.json"]
    assert runs[0] == runs[1]
    record = json.loads(runs[0]["result.json"])
    for result in (record["result"], *record["per_seed"]):
        assert not set(WALL_CLOCK_KEYS) & set(result) and "map" in result


def test_proposals_for_another_image_size_are_refused(tmp_path):
    from pipeline.evaluate.detect.network import detection_images

    year = write_tiny_voc(tmp_path / "scenes", n_images=4, size=64)
    _write_proposals(year, tmp_path / "proposals", "train")
    path = tmp_path / "proposals" / "detect" / "train.h5"
    with h5py.File(path, "r+") as fh:
        fh["image_sizes"][0] = [128, 128]  # made for an upscaled image: wrong frame
    with pytest.raises(DataError, match="128x128"):
        detection_images(VOCDataset(year, "train", classes=TINY_CLASSES), path, 100, True)


def test_bad_detect_config_is_refused(tmp_path):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match=r"detect\.bg_iou_low"):
        _params(tmp_path, bg_iou_low=0.6)
    with pytest.raises(ConfigError, match=r"detect\.min_size"):
        _params(tmp_path, min_size=900, max_size=600)


def test_detector_seed_pairs_are_pooled_with_a_known_answer():
    """Two classes, one object of each per image. Pair 0: b finds both classes perfectly,
    a nothing (difference 1 on every resample); pair 1: b finds class 0 only (0.5). A
    resample of the two pairs averages {1, 1}, {1, 0.5} or {0.5, 0.5}: 1, 0.75, 0.5 with
    chances 1/4, 1/2, 1/4, so the 95% interval is [0.5, 1] around 0.75; one pair: [1, 1]."""
    from pipeline.evaluate.detect.detection_ap import GroundTruth
    from pipeline.evaluate.detect.stage import paired_seed_bootstrap

    m = 12
    boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
    gt = [GroundTruth.make(boxes, [0, 1]) for _ in range(m)]
    nothing = [(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))] * m
    both = [(boxes, np.ones(2, np.float32), np.array([0, 1]))] * m
    first = [(boxes[:1], np.ones(1, np.float32), np.array([0]))] * m
    value, diffs = paired_seed_bootstrap([nothing], [both], gt, 2, 200, seed=0)
    assert value == 1.0 and (diffs == 1.0).all()
    value, diffs = paired_seed_bootstrap([nothing, nothing], [both, first], gt, 2, 2000, seed=0)
    assert value == pytest.approx(0.75, abs=1e-12)
    assert set(np.round(diffs, 9)) == {0.5, 0.75, 1.0}
    assert np.mean(diffs == 0.75) == pytest.approx(0.5, abs=0.05)  # sd 0.011
    ci = percentile_interval(value, diffs, 2000)
    assert (ci.ci_low, ci.ci_high) == (pytest.approx(0.5), pytest.approx(1.0))
    with pytest.raises(ValueError, match="detectors to pair"):
        paired_seed_bootstrap([nothing], [both, first], gt, 2, 10, seed=0)


@pytest.mark.slow
def test_detect_stages_with_two_detector_seeds(tmp_path):
    """detect.seeds 2: two detectors per network (seeds 0 and 1), the first the same as
    with one seed; the metrics are their means, the interval pools the seed pairs."""
    from pipeline.evaluate.detect.network import combine_results
    from pipeline.runner import stage_script

    year = write_tiny_voc(tmp_path / "scenes", n_images=8, size=96)
    for split in ("train", "test"):
        _write_proposals(year, tmp_path / "proposals", split)
    _scn_model(tmp_path / "train" / "model.pt")
    one = stage_script("detect_original")(_params(tmp_path, n_examples=0))
    with h5py.File(tmp_path / "original" / "detect" / "detections.h5") as fh:
        first = {k: fh["original"][k][:] for k in ("boxes", "scores", "labels")}
    params = _params(tmp_path, seeds=2, n_examples=0)
    with pytest.raises(DataError, match=r"other params \(detect\.seeds: 1 there, 2 now"):
        stage_script("detect")(params)  # the original's results have one detector
    stage_script("detect_original")(params)
    metrics = stage_script("detect")(params)
    for net in ("original", "scn"):
        m = metrics[net]
        assert m["detector_seeds"] == [0, 1] and len(m["map_per_seed"]) == 2
        per = [v for v in m["map_per_seed"] if v is not None]
        assert m["map"] == pytest.approx(np.mean(per), rel=1e-9)
    assert metrics["original"]["map_per_seed"][0] == one["original"]["map"]
    diffs = metrics["map_diff_per_seed"]
    assert metrics["map_diff"] == pytest.approx(np.mean(diffs), abs=1e-9)
    ci = metrics["map_diff_ci"]
    assert ci["value"] == pytest.approx(metrics["map_diff"], abs=1e-6)
    assert ci["ci_low"] <= ci["bootstrap_mean"] <= ci["ci_high"]
    rec = read_distributions(tmp_path / "detect" / "bootstrap.npz")["det"]
    assert percentile_interval(rec["value"], rec["diffs"], 1000).to_dict() == ci
    with h5py.File(tmp_path / "detect" / "detections.h5") as fh:
        assert {"original", "original_seed1", "scn", "scn_seed1"} <= set(fh)
        for k in first:  # detector 0 is the one-seed run's detector
            np.testing.assert_array_equal(fh["original"][k][:], first[k])
    history = (tmp_path / "detect" / "history.csv").read_text()
    assert history.count("\n") == 1 + 4 * 6 and "scn_seed1," in history
    with pytest.raises(ValueError, match="results for seeds"):
        combine_results([metrics["original"]], [0, 1])
    from pipeline.evaluate.detect.original import read_original_detect
    from pipeline.runner import stage_provenance

    ids = json.loads((tmp_path / "original" / "detect" / "result.json").read_text())["image_ids"]
    prov = stage_provenance(params, "detect_original")
    assert len(read_original_detect(tmp_path / "original" / "detect", prov, ids, 2).detections) == 2
    with pytest.raises(DataError, match=r"made with 2 detector seeds, detect\.seeds is 1"):
        read_original_detect(tmp_path / "original" / "detect", prov, ids, 1)
