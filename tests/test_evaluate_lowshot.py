"""The low-shot protocol: VISSL's sampler, infeasible k, a small end-to-end, the plot."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import ConfigError, build
from pipeline.evaluate.ap import average_precision, mean_ap
from pipeline.evaluate.classify.lowshot import (
    evaluate_lowshot,
    lowshot_sample,
    plot_lowshot,
    plot_lowshot_diff,
    sample_rng,
    short_classes,
)
from pipeline.evaluate.config import ClassifyConfig

COSTS = (0.1, 1.0, 10.0)


def labelled(counts: list[int], seed: int = 0, difficult: float = 0.1) -> np.ndarray:
    """(N, C) single-label items: counts[c] of class c, some difficult (0)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    labels = -np.ones((len(y), len(counts)), np.int8)
    labels[np.arange(len(y)), y] = np.where(rng.random(len(y)) < difficult, 0, 1)
    return labels


def test_sampler_draws_k_positives_and_c_minus_1_k_negatives_per_class():
    labels = labelled([30, 40, 50, 60])
    k = 5
    d = lowshot_sample(labels, k, sample_rng(0, 0, k))
    assert d.mask.shape == labels.shape and d.negatives_capped == 0
    for c in range(4):
        drawn = labels[d.mask[:, c], c]
        assert (drawn == 1).sum() == k  # exactly k positives
        assert (drawn == -1).sum() == 3 * k  # (C - 1) k negatives
        assert (drawn == 0).sum() == 0  # difficult items are never drawn
    # deterministic for a seed; another sample (or k, or seed) is another draw
    again = lowshot_sample(labels, k, sample_rng(0, 0, k))
    assert np.array_equal(again.mask, d.mask)
    for other in (sample_rng(0, 1, k), sample_rng(1, 0, k)):
        assert not np.array_equal(lowshot_sample(labels, k, other).mask, d.mask)


def test_sampler_caps_negatives_and_refuses_a_class_short_of_positives():
    labels = labelled([10, 12, 14], difficult=0.0)
    d = lowshot_sample(labels, 10, sample_rng(0, 0, 10))  # 20 of 26 / 24 / 22 negatives
    assert d.negatives_capped == 0
    assert [(labels[d.mask[:, c], c] == -1).sum() for c in range(3)] == [20, 20, 20]
    multi = labels.copy()  # multi-label (as images): class 2 on 30 items, 6 negatives left
    multi[:, 2] = np.where(np.arange(36) < 30, 1, -1)
    d = lowshot_sample(multi, 4, sample_rng(0, 0, 4))  # class 2 wants 8 negatives
    assert d.negatives_capped == 1 and (multi[d.mask[:, 2], 2] == -1).sum() == 6
    assert (multi[d.mask[:, 2], 2] == 1).sum() == 4
    with pytest.raises(ValueError, match=r"k=13: classes \[0, 1\]"):
        lowshot_sample(labels, 13, sample_rng(0, 0, 13))
    assert short_classes(labels, 13) == [0, 1] and short_classes(labels, 10) == []


def features(labels: np.ndarray, dim: int, seed: int, signal: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    protos = np.random.default_rng(42).normal(size=(labels.shape[1], dim))
    cls = np.argmax(labels != -1, axis=1)  # own class (positive or difficult)
    return signal * protos[cls] + rng.normal(size=(len(labels), dim))


def test_lowshot_end_to_end_small():
    ytr, yte = labelled([20, 25, 30], seed=1), labelled([15, 15, 15], seed=2)
    xtr, xte = features(ytr, 32, seed=3, signal=0.6), features(yte, 32, seed=4, signal=0.6)
    # "scn": the same items, other features (a noisier copy)
    xtr2 = xtr + np.random.default_rng(5).normal(size=xtr.shape)
    xte2 = xte + np.random.default_rng(6).normal(size=xte.shape)
    scores: dict = {}
    out = evaluate_lowshot(
        {"original": (xtr, ytr), "scn": (xtr2, ytr)},
        {"original": (xte, yte), "scn": (xte2, yte)},
        ("a", "b", "c"), [1, 4, 16, 40], 3, COSTS, 3, 0, scores_out=scores,
    )  # fmt: skip
    # each draw's test scores, kept out of the record: their mAP is the draw's mAP
    assert set(scores) == {"original", "scn"} and "scores" not in out["scn"]
    for net, per_k in scores.items():
        assert sorted(per_k) == [1, 4, 16]
        for i, k in enumerate(out["k"]):
            assert per_k[k].shape == (3, len(yte), 3)
            got = [mean_ap(average_precision(s[:, c], yte[:, c]) for c in range(3))
                   for s in per_k[k]]  # fmt: skip
            np.testing.assert_allclose(got, out[net]["maps"][i], atol=1e-6)
    assert out["k"] == [1, 4, 16] and out["n_samples"] == 3
    assert out["skipped_k"] == {"40": ["a", "b", "c"]}  # fewer than 40 positives
    assert set(out["negatives_capped"]) == {"1", "4", "16"}
    for net in ("original", "scn"):
        res = out[net]
        assert np.shape(res["maps"]) == (3, 3)
        np.testing.assert_allclose(res["map_mean"], np.mean(res["maps"], axis=1), atol=1e-6)
        np.testing.assert_allclose(res["map_std"], np.std(res["maps"], axis=1), atol=1e-6)
        assert all(0 < m <= 1 for row in res["maps"] for m in row)
        assert res["map_mean"][-1] > res["map_mean"][0]  # more positives, better SVMs
        assert len({tuple(r) for r in res["maps"]}) > 1
    assert out["original"]["map_mean"][-1] > out["scn"]["map_mean"][-1]  # less noise wins
    # seeded: the same result again; the sklearn reference agrees
    again = evaluate_lowshot(
        {"original": (xtr, ytr)}, {"original": (xte, yte)}, ("a", "b", "c"), [1, 4, 16], 3,
        COSTS, 3, 0,
    )  # fmt: skip
    assert again["original"] == out["original"]
    ref = evaluate_lowshot(
        {"original": (xtr, ytr)}, {"original": (xte, yte)}, ("a", "b", "c"), [4], 3,
        COSTS, 3, 0, solver="sklearn",
    )  # fmt: skip
    np.testing.assert_allclose(ref["original"]["maps"][0], out["original"]["maps"][1], atol=1e-3)


def test_networks_must_share_labels():
    y = labelled([10, 10])
    with pytest.raises(ValueError, match="different train labels"):
        evaluate_lowshot(
            {"original": (np.ones((20, 3)), y), "scn": (np.ones((20, 3)), -y)},
            {"original": (np.ones((20, 3)), y), "scn": (np.ones((20, 3)), y)},
            ("a", "b"), [1], 1, COSTS, 3, 0,
        )  # fmt: skip


def test_lowshot_plot(tmp_path):
    res = {
        "k": [1, 2, 4], "n_samples": 2, "skipped_k": {"8": ["a"]}, "negatives_capped": {},
        "original": {"map_mean": [0.4, 0.5, 0.6], "map_std": [0.05, 0.04, 0.02]},
        "scn": {"map_mean": [0.42, 0.52, 0.61], "map_std": [0.05, 0.03, 0.02]},
    }  # fmt: skip
    path = tmp_path / "lowshot.png"
    plot_lowshot(path, {"obj": res, "img": res}, ("original", "scn"))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_lowshot(tmp_path / "off.png", {}, ("original", "scn"))  # disabled: still a PNG
    assert (tmp_path / "off.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    diffs = {s: {f"k{k}": {"diff": 0.02 * i, "lo": 0.02 * i - 0.01, "hi": 0.02 * i + 0.01,
                           "verdict": "gain" if i else "no measurable difference"}
                 for i, k in enumerate((1, 2, 4))} for s in ("obj", "img")}  # fmt: skip
    plot_lowshot_diff(tmp_path / "diff.png", diffs, "SCN - original")
    plot_lowshot_diff(tmp_path / "diff_off.png", {}, "SCN - original", "bootstrap disabled")
    for name in ("diff.png", "diff_off.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_lowshot_keys():
    assert build(ClassifyConfig, {"lowshot_k": []}, "classify").lowshot_k == ()
    with pytest.raises(ConfigError, match=r"classify\.lowshot_k"):
        build(ClassifyConfig, {"lowshot_k": [1, 2, 2]}, "classify")
    with pytest.raises(ConfigError, match=r"classify\.lowshot_k\[0\]"):
        build(ClassifyConfig, {"lowshot_k": [0]}, "classify")
    with pytest.raises(ConfigError, match=r"classify\.lowshot_samples"):
        build(ClassifyConfig, {"lowshot_samples": 0}, "classify")
