"""The paired bootstrap of mAP differences: known answers and a brute-force enumeration;
the interval pooled over training seeds (test items x seeds)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipeline.evaluate.ap import average_precision, mean_ap
from pipeline.evaluate.bootstrap import (
    Interval,
    bootstrap_differences,
    draws_differences,
    map_differences,
    paired_bootstrap,
    percentile_interval,
    pooled_differences,
    pooled_interval,
    ranked_envelope_sum,
    read_distributions,
    resample_counts,
    weighted_ap,
    write_distributions,
)


def scored(m: int, c: int, seed: int, noise: float):
    """Labels (M, C) with one positive class per item and a few difficult, and scores
    = label signal + noise."""
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, c, m)
    labels = -np.ones((m, c), np.int8)
    labels[np.arange(m), cls] = np.where(rng.random(m) < 0.05, 0, 1)
    scores = (labels == 1) + noise * rng.normal(size=(m, c))
    return scores, labels


def test_weighted_ap_equals_the_reference_on_expanded_resamples():
    scores, labels = scored(40, 1, seed=0, noise=0.8)
    s, y = scores[:, 0], labels[:, 0]
    rng = np.random.default_rng(1)
    w = resample_counts(40, 50, rng)  # (50, 40)
    assert np.all(w.sum(axis=1) == 40)
    got = weighted_ap(s, y, w)
    for b in range(50):
        idx = np.repeat(np.arange(40), w[b].astype(int))  # the expanded resample, item order
        assert got[b] == pytest.approx(average_precision(s[idx], y[idx]), abs=1e-12)
    # all weights 1: the plain AP
    assert weighted_ap(s, y, np.ones((1, 40)))[0] == pytest.approx(average_precision(s, y))
    assert np.isnan(weighted_ap(s, -np.ones(40), np.ones((1, 40)))[0])  # no positive


def test_weighted_ap_equals_the_dense_envelope_sum_with_ties_and_difficult_items():
    """weighted_ap sums at the positives only; ranked_envelope_sum (detection's) over every
    ranked item: the same AP on every resample, with tied scores, difficult items, items
    never drawn and a class whose positives all are difficult (nan)."""
    rng = np.random.default_rng(3)
    m = 120
    scores = np.round(rng.normal(size=m), 1)  # many ties
    labels = rng.choice([1, -1, -1, -1, 0], size=m).astype(np.int8)
    w = resample_counts(m, 300, rng)
    order = np.argsort(-scores, kind="mergesort")
    pos = (labels[order] == 1).astype(np.float64)
    neg = (labels[order] == -1).astype(np.float64)
    total, n_pos = ranked_envelope_sum(w[:, order], pos, neg)
    with np.errstate(invalid="ignore", divide="ignore"):
        dense = np.where(n_pos > 0, total / n_pos, np.nan)
    np.testing.assert_allclose(weighted_ap(scores, labels, w), dense, rtol=1e-12, atol=0)
    only_difficult = np.where(labels == 1, 0, labels)
    assert np.all(np.isnan(weighted_ap(scores, only_difficult, w)))


def test_identical_models_give_exactly_zero():
    scores, labels = scored(60, 4, seed=2, noise=1.0)
    ci = paired_bootstrap(scores, scores.copy(), labels, n_boot=200, seed=0)
    assert (ci.value, ci.ci_low, ci.ci_high, ci.mean) == (0.0, 0.0, 0.0, 0.0)
    assert ci.verdict == "no measurable difference"


def test_a_model_better_on_every_item_is_a_gain_and_its_mirror_a_loss():
    """b ranks every positive of every class above every negative; a is noisy, so every
    resample's AP difference is positive."""
    _, labels = scored(80, 3, seed=3, noise=0.0)
    perfect = (labels == 1).astype(float)  # (M, C)
    noisy = perfect + 1.5 * np.random.default_rng(4).normal(size=perfect.shape)
    gain = paired_bootstrap(noisy, perfect, labels, n_boot=300, seed=0)
    assert gain.ci_low > 0 and gain.verdict == "gain"
    loss = paired_bootstrap(perfect, noisy, labels, n_boot=300, seed=0)
    assert loss.ci_high < 0 and loss.verdict == "loss"
    assert loss.value == pytest.approx(-gain.value)


def test_point_estimate_is_the_map_difference_and_the_bootstrap_is_centred_on_it():
    a, labels = scored(300, 5, seed=5, noise=1.2)
    b = a + 0.3 * (labels == 1) + 0.5 * np.random.default_rng(6).normal(size=a.shape)
    ci = paired_bootstrap(a, b, labels, n_boot=1000, seed=0)
    ap = lambda s: mean_ap(average_precision(s[:, c], labels[:, c]) for c in range(5))  # noqa: E731
    assert ci.value == pytest.approx(ap(b) - ap(a), abs=1e-12)
    assert ci.ci_low < ci.value < ci.ci_high
    assert abs(ci.mean - ci.value) < 0.1 * (ci.ci_high - ci.ci_low)
    assert ci.n_boot == 1000 and ci.level == 0.95
    # seeded: the same interval again
    assert paired_bootstrap(a, b, labels, n_boot=1000, seed=0) == ci


def test_percentile_interval_matches_the_exact_bootstrap_distribution():
    """M = 5 items: all 5^5 ordered resamples are equally likely; their mAP differences by
    the reference AP give the exact bootstrap distribution, whose 2.5% / 97.5% quantiles
    and mean the Monte Carlo interval must approach."""
    scores_a = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.5], [0.4, 0.3], [0.1, 0.7]])
    scores_b = np.array([[0.8, 0.3], [0.1, 0.9], [0.6, 0.25], [0.5, 0.2], [0.2, 0.4]])
    labels = np.array([[1, -1], [-1, 1], [-1, 1], [1, -1], [-1, 1]])
    m = 5
    exact, counts = [], []
    for idx in itertools.product(range(m), repeat=m):
        idx = np.sort(np.array(idx))  # item order within the resample (ties: module doc)
        maps = [
            mean_ap(average_precision(s[idx, c], labels[idx, c]) for c in range(2))
            for s in (scores_a, scores_b)
        ]
        exact.append(maps[1] - maps[0])
        counts.append(np.bincount(idx, minlength=m))
    exact, counts = np.array(exact), np.array(counts, dtype=float)
    # the vectorised computation agrees resample by resample
    got = map_differences(scores_a, scores_b, labels, counts)
    np.testing.assert_allclose(got, exact, atol=1e-12)
    exact = exact[~np.isnan(exact)]
    ci = paired_bootstrap(scores_a, scores_b, labels, n_boot=40000, seed=1)
    q = lambda p: np.quantile(exact, p)  # noqa: E731
    assert q(0.015) <= ci.ci_low <= q(0.035)
    assert q(0.965) <= ci.ci_high <= q(0.985)
    assert ci.mean == pytest.approx(exact.mean(), abs=0.005)


def test_classes_without_an_svm_are_left_out_and_bad_input_rejected():
    a, labels = scored(50, 3, seed=7, noise=1.0)
    b = a.copy()
    b[:, 0] += 0.2 * np.random.default_rng(8).normal(size=50)
    a_nan, b_nan = a.copy(), b.copy()
    a_nan[:, 2] = b_nan[:, 2] = np.nan  # class 2: no SVM for either network
    ci = paired_bootstrap(a_nan, b_nan, labels, n_boot=100, seed=0)
    ref = paired_bootstrap(a[:, :2], b[:, :2], labels[:, :2], n_boot=100, seed=0)
    assert ci == ref
    with pytest.raises(ValueError, match="same"):
        paired_bootstrap(a, b[:10], labels, n_boot=10, seed=0)
    with pytest.raises(ValueError, match="n_boot"):
        paired_bootstrap(a, b, labels, n_boot=0, seed=0)


def test_interval_dict_and_verdicts():
    d = Interval(0.01, -0.002, 0.03, 0.011, 500).to_dict()
    assert d["verdict"] == "no measurable difference" and d["n_boot"] == 500
    assert Interval(0.01, 0.001, 0.03, 0.01, 500).verdict == "gain"
    assert Interval(-0.01, -0.03, -0.001, -0.01, 500).verdict == "loss"


def test_runs_on_one_test_set_share_every_resample():
    """Differences of b - a and c - b on the same seed add up to c - a resample by resample,
    which holds only if all three use the same resamples of the test items."""
    a, labels = scored(70, 3, seed=11, noise=1.2)
    rng = np.random.default_rng(12)
    b, c = a + 0.5 * rng.normal(size=a.shape), a + 0.5 * rng.normal(size=a.shape)
    _, ab = bootstrap_differences(a, b, labels, n_boot=300, seed=5)
    _, bc = bootstrap_differences(b, c, labels, n_boot=300, seed=5)
    value, ac = bootstrap_differences(a, c, labels, n_boot=300, seed=5)
    np.testing.assert_allclose(ab + bc, ac, atol=1e-12)
    assert paired_bootstrap(a, c, labels, n_boot=300, seed=5).value == value


def test_pooled_interval_over_seeds_known_answers():
    a, labels = scored(80, 3, seed=3, noise=1.0)
    b = a + 0.4 * np.random.default_rng(4).normal(size=a.shape)
    value, diffs = bootstrap_differences(a, b, labels, n_boot=500, seed=0)
    single = paired_bootstrap(a, b, labels, n_boot=500, seed=0)
    # one seed, or several identical seeds: the single run's interval
    assert pooled_interval(np.array([value]), diffs[None], seed=1) == single
    same = pooled_interval(np.array([value] * 3), np.stack([diffs] * 3), seed=1)
    assert (same.value, same.ci_low, same.ci_high) == pytest.approx(
        (single.value, single.ci_low, single.ci_high), abs=1e-12
    )
    # no test-set noise, two seeds at 0 and 1: the mean of two seeds drawn with replacement
    # is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4, so the 95% interval is [0, 1]
    spread = pooled_interval(
        np.array([0.0, 1.0]), np.stack([np.zeros(4000), np.ones(4000)]), seed=2
    )
    assert (spread.value, spread.ci_low, spread.ci_high) == (0.5, 0.0, 1.0)
    assert spread.mean == pytest.approx(0.5, abs=0.02)
    assert spread.verdict == "no measurable difference"
    # seeds that agree, with test noise: the pooled interval is no wider than one seed's
    shifted = pooled_interval(np.array([0.05, 0.05]), np.stack([diffs - value + 0.05] * 2), seed=3)
    assert shifted.ci_high - shifted.ci_low == pytest.approx(single.ci_high - single.ci_low)
    with pytest.raises(ValueError, match="expected"):
        pooled_interval(np.array([0.1, 0.2]), np.zeros((3, 10)), seed=0)


def test_distributions_round_trip(tmp_path):
    diffs = np.array([0.01, np.nan, -0.02])
    rec = {"value": 0.005, "diffs": diffs, "seed": 3, "n_boot": 3, "n_test": 40}
    path = tmp_path / "bootstrap.npz"
    write_distributions(path, {"obj": rec, "img": {**rec, "n_test": 9}})
    got = read_distributions(path)
    assert set(got) == {"obj", "img"} and got["img"]["n_test"] == 9
    np.testing.assert_array_equal(got["obj"]["diffs"], diffs)
    assert {k: got["obj"][k] for k in ("value", "seed", "n_boot", "n_test")} == {
        "value": 0.005,
        "seed": 3,
        "n_boot": 3,
        "n_test": 40,
    }
    assert [p.name for p in tmp_path.iterdir()] == ["bootstrap.npz"]  # no temporary left
    write_distributions(path, {})  # bootstrap off: no stale file outlives its results
    assert not path.exists()


# --------------------------------------------------------------------------- low-shot


def test_draws_differences_identical_draws_give_exactly_zero():
    """Both networks with the same scores on every draw: every resample's difference is
    0, so the interval is [0, 0] (issue 24: identical scores)."""
    draws = [scored(50, 3, seed=s, noise=1.0) for s in range(4)]
    labels = draws[0][1]
    a = np.stack([d[0] for d in draws])  # (S, M, C), one draw's SVM scores each
    value, diffs = draws_differences(a, a.copy(), labels, n_boot=200, seed=0)
    assert value == 0.0 and diffs.shape == (200,) and np.all(diffs == 0.0)
    ci = percentile_interval(value, diffs, 200)
    assert ci.to_short_dict() == {"diff": 0.0, "lo": 0.0, "hi": 0.0,
                                  "verdict": "no measurable difference"}  # fmt: skip


def test_draws_differences_one_draw_is_the_paired_bootstrap_and_value_the_mean():
    """One draw: exactly the full protocol's paired bootstrap. Several: the value is the
    mean over the draws of each draw's mAP difference (what the low-shot metrics' map_mean
    give), and differences add across three networks as in the full protocol."""
    a, labels = scored(60, 3, seed=7, noise=1.0)
    rng = np.random.default_rng(8)
    b = a + 0.5 * rng.normal(size=a.shape)
    value, diffs = draws_differences(a[None], b[None], labels, n_boot=300, seed=4)
    assert percentile_interval(value, diffs, 300) == paired_bootstrap(a, b, labels, 300, seed=4)
    sa = np.stack([a + 0.3 * rng.normal(size=a.shape) for _ in range(3)])  # (3, M, C)
    sb = np.stack([b + 0.3 * rng.normal(size=a.shape) for _ in range(3)])
    value, _ = draws_differences(sa, sb, labels, n_boot=50, seed=0)
    per_draw = [mean_ap(average_precision(sb[s][:, c], labels[:, c]) for c in range(3))
                - mean_ap(average_precision(sa[s][:, c], labels[:, c]) for c in range(3))
                for s in range(3)]  # fmt: skip
    assert value == pytest.approx(np.mean(per_draw), abs=1e-12)
    sc = sb + 0.2 * rng.normal(size=a.shape)
    _, ab = draws_differences(sa, sb, labels, n_boot=100, seed=2)
    _, bc = draws_differences(sb, sc, labels, n_boot=100, seed=2)
    _, ac = draws_differences(sa, sc, labels, n_boot=100, seed=2)
    np.testing.assert_allclose(ab + bc, ac, atol=1e-12)  # the same test and draw resamples
    with pytest.raises(ValueError, match=r"\(S, M, C\)"):
        draws_differences(sa, sb[:2], labels, n_boot=10, seed=0)


def test_draws_differences_match_a_computable_resampling_distribution():
    """One class, M items, P positives, no ties. Draw 0: b ranks every positive first (AP 1
    on any resample), a every positive last, so a's AP on a resample holding X positive
    copies is X / M (every positive's envelope is the last one's precision) and the
    difference is 1 - X / M, X ~ Binomial(M, P / M). Draw 1: both rank every positive last
    (difference 0). Resample b averages J draw-0 picks of 2, J ~ Binomial(2, 1/2)
    independent of X: the difference is (J / 2)(1 - X / M). So the value is
    (1 - P / M) / 2; P(J = 0) = 1/4 > 2.5% puts the lower bound at 0; the values with J = 2
    lie above those with J <= 1, so the upper bound is the 90th percentile of 1 - X / M
    (0.025 of the whole in the top quarter); and the bootstrap mean is (1 - P/M) / 2."""
    from scipy.stats import binom

    m, p = 40, 12
    labels = -np.ones((m, 1), np.int8)
    labels[:p] = 1
    order = np.arange(m, dtype=np.float64)
    good = np.where(labels[:, 0] == 1, 100.0 + order, order)[:, None]  # positives on top
    bad = np.where(labels[:, 0] == 1, -100.0 - order, order)[:, None]  # positives at the bottom
    a, b = np.stack([bad, bad]), np.stack([good, bad])  # (2, M, 1)
    n_boot = 8000
    value, diffs = draws_differences(a, b, labels, n_boot=n_boot, seed=11)
    assert value == pytest.approx((1 - p / m) / 2, abs=1e-12)
    ci = percentile_interval(value, diffs, n_boot)
    assert ci.ci_low == 0.0
    x_10 = binom.ppf(0.10, m, p / m)  # 10th percentile of X: the 90th of 1 - X / M
    assert ci.ci_high == pytest.approx(1 - x_10 / m, abs=1.01 / m)  # within one positive
    assert ci.mean == pytest.approx((1 - p / m) / 2, abs=0.01)
    # J: the share of resamples with no draw-0 pick is 1/4, with two of them 1/4
    assert np.mean(diffs == 0) == pytest.approx(0.25, abs=0.02)
    assert np.mean(diffs > 0.5) == pytest.approx(0.25, abs=0.02)
    assert ci.verdict == "no measurable difference"


def test_pooled_differences_rows_and_checks():
    d = np.stack([np.full(3000, 0.01), np.full(3000, 0.03)])
    pooled = pooled_differences(d, seed=[5, 1])
    # two rows drawn with replacement: 0.01, 0.02, 0.03 with 1/4, 1/2, 1/4
    for v, share in ((0.01, 0.25), (0.02, 0.5), (0.03, 0.25)):
        assert np.mean(np.isclose(pooled, v)) == pytest.approx(share, abs=0.03)
    np.testing.assert_array_equal(pooled_differences(d[:1], seed=0), d[0])
    with pytest.raises(ValueError, match=r"\(S, B\)"):
        pooled_differences(np.zeros(3), seed=0)
