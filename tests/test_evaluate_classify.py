"""The classify stage end to end on the tiny VOC fixture with a tiny SCN model."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from pipeline.backbones import build_backbone
from pipeline.backbones.preprocess import crop_resize, normalize
from pipeline.config import ConfigError, build, to_dict
from pipeline.data.voc import open_split
from pipeline.errors import DataError
from pipeline.evaluate.bootstrap import percentile_interval, read_distributions
from pipeline.evaluate.classify.context import context_offsets, object_pairs
from pipeline.evaluate.classify.features import ObjectTable, cached_features, original_extractor
from pipeline.evaluate.config import ClassifyConfig
from pipeline.params import Params
from pipeline.runner import stage_script
from pipeline.train.model import build_scn, save_trained
from tests.helpers.numeric import assert_close_rel
from tests.helpers.voc import write_tiny_voc

SIZE = 64  # tiny input size: fast on the CPU


def make_params(root: Path, **classify) -> Params:
    return build(
        Params,
        {
            "dataset": "scenes",
            "paths": {
                "train": str(root / "train"),
                "classify": str(root / "classify"),
                "original": str(root / "original"),
                "metrics": str(root / "metrics"),
                "plots": str(root / "plots"),
            },
            "data": {"scenes_root": str(root / "scenes")},
            "network": {"input_size": SIZE},
            "classify": {
                "costs": [0.1, 1.0, 10.0],
                "max_context_pairs": 40,
                "batch_size": 16,
                "device": "cpu",
                "bootstrap": 200,
                "lowshot_k": [1, 2, 50],  # 50: more than any class has, skipped
                "lowshot_samples": 2,
                **classify,
            },
        },
    )


def write_model(path: Path, perturb: float, seed: int = 0) -> None:
    """A 'trained' SCN through the train stage's own API; ``perturb`` moves its head."""
    torch.manual_seed(seed)
    bb = build_backbone("efficientnet_lite0", input_size=SIZE)
    model = build_scn(bb, "fc", target_dim=bb.feature_dim, hidden=16)
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(perturb * torch.randn_like(p))
    fresh = build_backbone("efficientnet_lite0", input_size=SIZE)
    save_trained(path, model, fresh, "fc", config={}, provenance={})


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("classify")
    # seed 6: every class has a train image, so low-shot k=1 is feasible
    write_tiny_voc(root / "scenes", n_images=12, size=96, seed=6)
    write_model(root / "train" / "model.pt", perturb=0.05)
    return root


def test_config_rejects_bad_costs():
    with pytest.raises(ConfigError, match=r"classify\.costs"):
        build(ClassifyConfig, {"costs": [0.0, 1.0]}, "classify")
    with pytest.raises(ConfigError, match=r"classify\.device"):
        build(ClassifyConfig, {"device": "tpu"}, "classify")


def test_original_features_equal_backbone_on_crops(workspace):
    params = make_params(workspace)
    ds = open_split(params.dataset_ref, "train")
    bb = build_backbone("efficientnet_lite0", input_size=SIZE)
    ext = original_extractor(bb, torch.device("cpu"))
    out = cached_features(workspace / "feat_check", ds, "obj", ext, "scenes", batch_size=5)
    table = ObjectTable.from_dataset(ds)
    assert out["features"].shape == (len(table), bb.feature_dim)
    im = ds.images[0]
    crops = crop_resize(ds.load_image(im), im.boxes(), SIZE)  # (K, 3, S, S)
    ref = bb.features(torch.from_numpy(normalize(crops, bb.mean, bb.std))).numpy()  # (K, D)
    assert_close_rel(out["features"][: len(ref)], ref)
    # labels: own class 1 (0 when difficult), -1 elsewhere
    assert (out["labels"] == 1).sum() + (out["labels"] == 0).sum() == len(table)


@pytest.mark.slow
def test_original_features_equal_the_top_stream_cache(workspace, tmp_path):
    """The same crops through the targets stage (the frozen top stream) give the same rows."""
    from pipeline.targets.cache import Patches, build_targets

    params = make_params(workspace)
    ds = open_split(params.dataset_ref, "test")
    bb = build_backbone("efficientnet_lite0", input_size=SIZE)
    ours = cached_features(
        tmp_path, ds, "obj", original_extractor(bb, torch.device("cpu")), "scenes", batch_size=7
    )
    table = ObjectTable.from_dataset(ds)
    (tmp_path / "manifest.h5").write_bytes(b"stand-in manifest")  # hashed into provenance
    patches = Patches(
        path=tmp_path / "manifest.h5",
        image_ids=ds.ids,
        image_sizes=np.array([(im.width, im.height) for im in ds.images], np.int32),
        image_index=table.image_index,
        boxes=table.box,
    )
    files = {im.id: im.path for im in ds.images}
    out = tmp_path / "targets.h5"
    build_targets(patches, files, out, bb, scope="fc", trunk_cache=False, workers=0, device="cpu")
    with h5py.File(out) as fh:
        assert_close_rel(fh["features"][()], ours["features"])


def test_object_pairs_same_image_distinct_and_capped():
    table = ObjectTable(
        image_index=np.array([0, 0, 0, 1, 1, 2], np.int32),
        box=np.zeros((6, 4), np.float32),
        class_index=np.array([0, 1, 1, 2, 2, 3], np.int16),
        difficult=np.array([False, False, True, False, False, False]),
    )
    top, bottom = object_pairs(table, 100, np.random.default_rng(0))
    pairs = sorted(zip(top.tolist(), bottom.tolist(), strict=True))
    assert pairs == [(0, 1), (1, 0), (3, 4), (4, 3)]
    top2, _ = object_pairs(table, 3, np.random.default_rng(0))
    assert len(top2) == 3


def test_context_offsets_are_the_pairs_stage_offsets():
    """o_ij = b_top - b_bottom over TL, TR, BL, BR corners, x / width and y / height."""

    ds = SimpleNamespace(  # the attributes context_offsets reads
        images=[SimpleNamespace(width=100, height=50), SimpleNamespace(width=200, height=200)]
    )
    table = ObjectTable(
        image_index=np.array([0, 0, 1, 1], np.int32),
        box=np.array(
            [[10, 20, 30, 40], [0, 0, 10, 10], [0, 0, 20, 20], [100, 100, 120, 140]], np.float32
        ),
        class_index=np.zeros(4, np.int16),
        difficult=np.zeros(4, bool),
    )
    off = context_offsets(ds, table, np.array([0, 3]), np.array([1, 2]), "image")
    # pair 0: corners TL (10,20)-(0,0), TR (30,20)-(10,0), BL (10,40)-(0,10), BR (30,40)-(10,10)
    np.testing.assert_allclose(off[0], [0.1, 0.4, 0.2, 0.4, 0.1, 0.6, 0.2, 0.6], rtol=1e-6)
    np.testing.assert_allclose(off[1], [0.5, 0.5, 0.5, 0.5, 0.5, 0.6, 0.5, 0.6], rtol=1e-6)
    pixels = context_offsets(ds, table, np.array([0]), np.array([1]), "none")
    np.testing.assert_allclose(pixels[0], [10, 20, 20, 20, 10, 30, 20, 30])


def _check_metrics(metrics: dict, max_pairs: int) -> None:
    for setting in ("obj", "img"):
        res = metrics[setting]
        for net in ("original", "scn"):
            assert 0.0 <= res[net]["map"] <= 1.0
            assert set(res[net]["per_class"]) == set(metrics["classes"])
        diff = res["scn"]["map"] - res["original"]["map"]
        assert res["map_diff"] == pytest.approx(diff, abs=1e-5)
        ci = res["map_diff_ci"]  # paired bootstrap over the test items
        assert ci["value"] == pytest.approx(diff, abs=1e-5) and ci["n_boot"] == 200
        assert ci["ci_low"] <= ci["bootstrap_mean"] <= ci["ci_high"]
        assert ci["verdict"] in ("gain", "loss", "no measurable difference")
        assert (ci["verdict"] == "no measurable difference") == (ci["ci_low"] <= 0 <= ci["ci_high"])
    low = metrics["lowshot"]
    assert low["k"] == [1, 2, 50] and low["n_samples"] == 2
    for setting in ("obj", "img"):
        res = low["settings"][setting]
        assert "50" in res["skipped_k"] and 50 not in res["k"] and 1 in res["k"]
        for net in ("original", "scn"):
            assert len(res[net]["map_mean"]) == len(res["k"]) == len(res[net]["maps"])
            assert all(len(m) == 2 for m in res[net]["maps"])
        # the difference per k, on the same draws, with its interval over items x draws
        diffs = metrics["lowshot_diff"][setting]
        assert list(diffs) == [f"k{k}" for k in res["k"]]
        for i, k in enumerate(res["k"]):
            d = diffs[f"k{k}"]
            want = np.mean(res["scn"]["maps"][i]) - np.mean(res["original"]["maps"][i])
            assert d["diff"] == pytest.approx(want, abs=1e-5)
            assert d["lo"] <= d["hi"]
            assert (d["verdict"] == "no measurable difference") == (d["lo"] <= 0 <= d["hi"])
    ctx = metrics["context"]
    for name in ("own", "context", "both"):
        assert 0.0 <= ctx[name]["accuracy"] <= 1.0
    assert 0 < ctx["n_train_pairs"] <= max_pairs and 0 < ctx["n_test_pairs"] <= max_pairs
    assert 0.0 <= ctx["same_class_share_train"] <= 1.0
    json.dumps(metrics)  # serialisable as the runner writes it


@pytest.mark.slow
def test_stage_end_to_end(workspace):
    """Untrained SCN (W_B = W_T) first: its features equal the original ones and the mAP
    difference is 0. Then a changed model: only the SCN caches are recomputed by classify,
    classify_original is not run again, and the original network's results are the same."""
    write_model(workspace / "train" / "model.pt", perturb=0.0)
    params = make_params(workspace)
    original = stage_script("classify_original")(params)
    first = stage_script("classify")(params)
    _check_metrics(first, 40)
    assert first["obj"]["map_diff"] == pytest.approx(0.0, abs=1e-4)
    assert first["img"]["map_diff"] == pytest.approx(0.0, abs=1e-4)
    for setting in ("obj", "img"):  # the same features (to 1e-5): an interval at 0
        ci = first[setting]["map_diff_ci"]
        assert abs(ci["ci_low"]) <= 0.01 and abs(ci["ci_high"]) <= 0.01
        assert first[setting]["original"] == original[setting]["original"]
        assert first[setting]["n_test"] == original[setting]["n_test"]
    cache, orig_cache = workspace / "classify", workspace / "original" / "classify"
    # the resampled differences behind each interval, for intervals pooled over seeds
    dist = read_distributions(cache / "bootstrap.npz")
    for setting in ("obj", "img"):
        rec, ci = dist[setting], first[setting]["map_diff_ci"]
        assert (rec["seed"], rec["n_boot"], len(rec["diffs"])) == (params.classify.seed, 200, 200)
        assert rec["n_test"] == first[setting]["n_test"]
        assert percentile_interval(rec["value"], rec["diffs"], 200).to_dict() == ci
        for k in first["lowshot"]["settings"][setting]["k"]:  # and each low-shot k's
            rec, short = dist[f"lowshot_{setting}_k{k}"], first["lowshot_diff"][setting][f"k{k}"]
            assert (rec["n_boot"], rec["n_test"]) == (200, first[setting]["n_test"])
            assert percentile_interval(rec["value"], rec["diffs"], 200).to_short_dict() == short
            assert abs(short["lo"]) <= 0.02 and abs(short["hi"]) <= 0.02  # the same features
    names = [f"{s}_{r}.h5" for s in ("img", "obj") for r in ("test", "train")]
    assert sorted(p.name for p in cache.glob("*.h5")) == [f"scn_{n}" for n in names]
    assert sorted(p.name for p in orig_cache.glob("*.h5")) == sorted(
        ["results.h5", *(f"original_{n}" for n in names)]
    )
    with (
        h5py.File(orig_cache / "original_obj_test.h5") as a,
        h5py.File(cache / "scn_obj_test.h5") as b,
    ):
        assert_close_rel(a["features"][()], b["features"][()])
        assert b.attrs["created_by"] == "classify" and len(b.attrs["model_sha256"]) == 64
        old_sha = b.attrs["model_sha256"]
    for name in ("classify_ap.png", "classify_lowshot.png", "classify_lowshot_diff.png"):
        assert (workspace / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    write_model(workspace / "train" / "model.pt", perturb=0.05)
    mtimes = {p: p.stat().st_mtime_ns for p in [*cache.glob("*.h5"), *orig_cache.glob("*.h5")]}
    second = stage_script("classify")(params)
    _check_metrics(second, 40)
    changed = {p.name for p in mtimes if p.stat().st_mtime_ns != mtimes[p]}
    assert changed == {f"scn_{n}" for n in names}
    with h5py.File(cache / "scn_obj_test.h5") as b:
        assert b.attrs["model_sha256"] != old_sha
    for setting in ("obj", "img"):
        assert second[setting]["original"] == first[setting]["original"]
    assert second["context"]["own"] == first["context"]["own"]
    # the low-shot draws are seeded and shared: the original network's results repeat
    for setting in ("obj", "img"):
        low1, low2 = first["lowshot"]["settings"][setting], second["lowshot"]["settings"][setting]
        assert low2["original"] == low1["original"]


@pytest.mark.slow
def test_split_stages_equal_both_networks_in_process(tmp_path):
    """classify reading classify_original's results gives what one process evaluating
    both networks gives: the same APs, the same paired bootstrap interval (same scores,
    seed and resamples) and the same low-shot results (both networks on the same draws).
    Results made with other params or other low-shot draws are refused, naming the file."""
    from pipeline.evaluate.bootstrap import paired_bootstrap
    from pipeline.evaluate.classify.features import read_features
    from pipeline.evaluate.classify.lowshot import evaluate_lowshot
    from pipeline.evaluate.classify.network import fit_network
    from pipeline.evaluate.classify.original import read_original_classify
    from pipeline.runner import stage_provenance

    write_tiny_voc(tmp_path / "scenes", n_images=12, size=96, seed=6)  # low-shot k=1 runs
    write_model(tmp_path / "train" / "model.pt", perturb=0.05)
    params = make_params(tmp_path, lowshot_k=[1, 2])
    stage_script("classify_original")(params)
    metrics = stage_script("classify")(params)

    cfg = params.classify
    datasets = {r: open_split(params.dataset_ref, s) for r, s in (("train", "train"),
                                                                  ("test", "test"))}  # fmt: skip
    classes = datasets["train"].classes
    where = {"original": params.paths.original_classify_dir, "scn": params.paths.classify}
    feats = {
        net: {
            setting: {
                role: read_features(where[net], ds, setting, net, "scenes")
                for role, ds in datasets.items()
            }
            for setting in ("obj", "img")
        }
        for net in where
    }
    fitted = {net: fit_network(feats[net], classes, cfg, net) for net in feats}
    for setting in ("obj", "img"):
        for net in ("original", "scn"):
            assert metrics[setting][net] == fitted[net][setting].to_dict()
        ci = paired_bootstrap(
            fitted["original"][setting].scores,
            fitted["scn"][setting].scores,
            feats["original"][setting]["test"]["labels"],
            cfg.bootstrap,
            cfg.seed,
        )
        assert metrics[setting]["map_diff_ci"] == ci.to_dict()
        both = evaluate_lowshot(
            {n: (feats[n][setting]["train"]["features"], feats[n][setting]["train"]["labels"])
             for n in feats},
            {n: (feats[n][setting]["test"]["features"], feats[n][setting]["test"]["labels"])
             for n in feats},
            classes, cfg.lowshot_k, cfg.lowshot_samples, cfg.costs, cfg.cv_folds, cfg.seed,
        )  # fmt: skip
        assert metrics["lowshot"]["settings"][setting] == both

    results = params.paths.original_classify_file
    labels = {s: {r: feats["scn"][s][r]["labels"] for r in ("train", "test")} for s in feats["scn"]}
    prov = stage_provenance(params, "classify_original")
    read_original_classify(results, prov, list(classes), labels, cfg)  # as classify did
    with pytest.raises(DataError, match=r"results\.h5: made with other params \(classify\.costs"):
        read_original_classify(results, {**prov, "classify.costs": [1.0]}, list(classes),
                               labels, cfg)  # fmt: skip
    other = build(ClassifyConfig, {**to_dict(cfg), "lowshot_samples": 3}, "classify")
    with pytest.raises(DataError, match=r"results\.h5: obj: its low-shot draws"):
        read_original_classify(results, prov, list(classes), labels, other)
    flipped = {s: {r: v.copy() for r, v in d.items()} for s, d in labels.items()}
    img_train = flipped["img"]["train"]
    img_train[0, 0] = -1 if img_train[0, 0] == 1 else 1
    with pytest.raises(DataError, match=r"img: its low-shot draws"):
        read_original_classify(results, prov, list(classes), flipped, cfg)
    # the original's per-draw low-shot test scores are stored (the low-shot bootstrap
    # resamples them); a file without them is refused
    ks = {s: metrics["lowshot"]["settings"][s]["k"] for s in ("obj", "img")}
    assert any(ks.values())  # some k is feasible on the tiny split
    with h5py.File(results) as fh:
        for setting, feasible in ks.items():
            low = fh[setting]["lowshot_scores"]
            assert sorted(low) == [f"k{k}" for k in feasible]
            for k in feasible:
                assert low[f"k{k}"].shape == (cfg.lowshot_samples, *fh[setting]["scores"].shape)
    setting = next(s for s, feasible in ks.items() if feasible)
    stale = tmp_path / "stale.h5"
    stale.write_bytes(results.read_bytes())
    with h5py.File(stale, "a") as fh:
        del fh[setting]["lowshot_scores"][f"k{ks[setting][-1]}"]
    with pytest.raises(DataError, match=rf"stale\.h5: {setting}: lacks the low-shot test scores"):
        read_original_classify(stale, prov, list(classes), labels, cfg)
    # the stage itself, with classify_original not rerun after an evaluation param change
    changed = make_params(tmp_path, lowshot_k=[1, 2], costs=[0.1, 1.0])
    with pytest.raises(DataError, match=r"results\.h5: made with other params"):
        stage_script("classify")(changed)
    results.unlink()
    with pytest.raises(DataError, match=r"results\.h5: missing"):
        stage_script("classify")(params)
