"""experiments/results.py: RESULTS.md rendering (pure), a real two-mechanism DVC experiment run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments.results import matches, parse_args
from experiments.results_report import Run, params_diff, pct, render_results
from pipeline.evaluate.bootstrap import pooled_interval
from tests.helpers.reports import fake_metrics
from tools.dvc_repo import make_repo, tiny_params

ROOT = Path(__file__).resolve().parent.parent


BASE = {"proposal": "edgebox", "backbone": "efficientnet_lite0", "dataset": "scenes",
        "train": {"epochs": 2}}  # fmt: skip


def context() -> dict:
    return {"commit": "a" * 40, "dirty": ["pipeline/train/loop.py"], "generated": "now",
            "command": "python -m experiments.results", "dvc_version": "3.67.1",
            "base_params": BASE, "base_params_text": "proposal: edgebox\n",
            "base_params_sha256": "f" * 64}  # fmt: skip


def row(text: str, first_cell: str, after: str) -> str:
    """The table line starting with ``| first_cell |`` after the heading ``after``."""
    section = text[text.index(after) :]
    return next(line for line in section.splitlines() if line.startswith(f"| {first_cell} |"))


def test_render_results_tables_sentences_and_provenance():
    bbox = Run("bbox", "results-bbox", "ok", 12.0, "b" * 40,
               {**BASE, "proposal": "bbox", "train": {"epochs": 1}},
               fake_metrics((0.40, 0.45), (0.60, 0.58), (0.30, 0.30)))  # fmt: skip
    random = Run("random", "results-random", "ok", 9.0, "c" * 40, {**BASE, "proposal": "random"},
                 fake_metrics((0.40, 0.38), (0.60, 0.61), (0.30, 0.25), context=0.4))  # fmt: skip
    yolo = Run("yolo", "results-yolo", "failed", 3.0, error="ERROR: stage yolo exploded",
               overrides=["proposal=yolo", "train.epochs=1"])  # fmt: skip
    text = render_results([bbox, random, yolo], context())

    # Table 2, paper form: original once, SCN per mechanism, paper rows beside.
    t2 = row(text, "efficientnet_lite0 (ours, scenes), Obj / Img", "## Table 2")
    assert t2.split(" | ")[1:] == ["40.00 / 60.00", "45.00 / 58.00", "failed", "not run",
                                   "38.00 / 61.00", "not run |"]  # fmt: skip
    assert "| VGG 19 (paper, VOC2012), Obj / Img | 81.4 / 78.1 | 82.6 / 78.8 |" in text
    assert row(text, "VGG 19 (paper, VOC2012), Obj / Img", "## Table 2").endswith("| — |")
    assert row(text, "bbox", "## Table 2").startswith(
        "| bbox | 1 | 40.00 | 45.00 | +5.00 | n/a | 60.00 | 58.00 | -2.00 | 81 / 83 | 10 / 10 |"
    )
    # Table 1 and Table 4.
    assert row(text, "random", "## Table 1").startswith("| random | 71.00 | 40.00 | 73.45 |")
    assert "| paper (VGG 19, VOC2012-Pairs) | 78.3 | 56.3 | 79.5 |" in text
    assert row(text, "random", "## Table 4") == (
        "| random | 30.00 | 25.00 | -5.00 | 31.00 | 26.00 | -5.00 | 1.80 / 2.25 |"
    )
    assert "58.7 | 59.4 | +0.7 |" in text
    # Figure 3: identical across experiments -> one row.
    assert "Identical in all 2 experiments." in text
    assert row(text, "ours", "## Figure 3").startswith("| ours | 40 | 1.5 | 30.25 | 0.050 |")
    assert row(text, "bbox", "## Proposals").startswith(
        "| bbox | train | 8.5 / 8.5 | 90.00 / 90.00 | 75.00 / 75.00 | 66 / 66 | 60 / 60 | "
        "123.4 | 0.2500 | 4.00 / 5.12 | +1.12 | n/a | 1.23 | 1.50 |"
    )
    # Facts, not opinions: without an interval, no verdict.
    assert "- bbox, Obj: SCN - original +5.00 points, no interval available, so no verdict." in text
    assert "- bbox, Img: SCN - original -2.00 points, no interval" in text
    assert "- bbox, detection (area mAP): SCN - original +0.00 points, no interval" in text
    assert "- random, detection (area mAP): SCN - original -5.00 points" in text
    assert "### Per seed" not in text  # one seed each
    assert "- No results for: `results-yolo` (failed)." in text
    assert "ERROR: stage yolo exploded" in text
    assert "| failed | — | 3 | — | requested: `proposal=yolo`, `train.epochs=1` |" in text
    assert "<!-- ANALYSIS" in text
    # Provenance: commit, dirty files, per-experiment params differences and commit.
    assert "Git commit `" + "a" * 40 + "`" in text and "`pipeline/train/loop.py`" in text
    assert '`proposal="bbox"`, `train.epochs=1`' in row(text, "bbox", "## Experiments")
    assert "`" + "c" * 12 + "`" in row(text, "random", "## Experiments")
    assert "f" * 64 in text


def test_render_results_has_a_doersch_column_and_no_context_row_for_it():
    edgebox = Run("edgebox", "results-edgebox", "ok", 12.0, "b" * 40, BASE,
                  fake_metrics((0.40, 0.45), (0.60, 0.58), (0.30, 0.30)))  # fmt: skip
    metrics = fake_metrics((0.40, 0.42), (0.60, 0.57), (0.30, 0.28))
    metrics["classify"]["context"] = {"skipped": "the trained model has no context module"}
    doersch = Run("doersch", "results-doersch", "ok", 20.0, "c" * 40,
                  {**BASE, "method": "doersch"}, metrics)  # fmt: skip
    text = render_results([edgebox, doersch], context())
    t2 = row(text, "efficientnet_lite0 (ours, scenes), Obj / Img", "## Table 2")
    assert t2.endswith("| 45.00 / 58.00 | not run | 42.00 / 57.00 |")  # EdgeBox, Random, Doersch
    assert "55.3 classification / 46.6 detection" in text
    assert row(text, "doersch", "## Table 2").startswith("| doersch | 1 | 40.00 | 42.00 | +2.00 |")
    assert row(text, "doersch", "## Table 4").startswith("| doersch | 30.00 | 28.00 | -2.00 |")
    table1 = text[text.index("## Table 1") : text.index("## Table 4")]
    assert "| edgebox |" in table1 and "| doersch |" not in table1  # no context module
    assert '`method="doersch"`' in row(text, "doersch", "## Experiments")


def test_render_results_writes_each_difference_with_its_interval_and_verdict():
    metrics = fake_metrics((0.40, 0.45), (0.60, 0.58), (0.30, 0.30))
    metrics["classify"]["obj"]["map_diff_ci"] = {
        "value": 0.05,
        "ci_low": 0.02,
        "ci_high": 0.08,
        "verdict": "gain",
    }
    metrics["classify"]["img"]["map_diff_ci"] = {
        "value": -0.02,
        "ci_low": -0.05,
        "ci_high": 0.01,
        "verdict": "no measurable difference",
    }
    run = Run("edgebox", "results-edgebox", "ok", 12.0, "b" * 40, BASE, metrics)
    text = render_results([run], context())
    assert row(text, "edgebox", "## Table 2").startswith(
        "| edgebox | 1 | 40.00 | 45.00 | +5.00 [+2.00, +8.00]: gain | n/a | 60.00 | 58.00 "
        "| -2.00 [-5.00, +1.00]: no measurable difference |"
    )  # fmt: skip
    assert "- edgebox, Obj: SCN - original +5.00 [+2.00, +8.00]: gain." in text


def seed_run(seed: int, obj_scn: float, diffs: np.ndarray) -> Run:
    """An edgebox run of one training seed: Obj original 0.40, with its bootstrap record."""
    metrics = fake_metrics((0.40, obj_scn), (0.60, 0.60), (0.30, 0.30 + seed / 100))
    metrics["diagnose"] = {
        "original": {"map": 0.41},
        "ceiling": {"map": 0.51},
        "targets": {"ridge_h1_offset": 0.07},
        "headroom": {"map": 0.10},
        "n_objects": {"train": 90, "test": 80},
    }
    metrics["classify"]["obj"]["map_diff_ci"] = {
        "ci_low": -0.1,
        "ci_high": 0.1,
        "verdict": "no measurable difference",
    }
    rec = {"value": obj_scn - 0.40, "diffs": diffs, "seed": 0, "n_boot": len(diffs), "n_test": 83}
    metrics["detect"]["map_diff_ci"] = {"ci_low": -0.2, "ci_high": 0.2,
                                        "verdict": "no measurable difference"}  # fmt: skip
    det = {**rec, "value": seed / 100, "diffs": diffs * 0 + seed / 100, "n_test": 50}
    name = "results-edgebox" + ("" if seed == 0 else f"-seed{seed}")
    return Run("edgebox", name, "ok", 10.0, f"{seed}" * 40, BASE, metrics, seed=seed,
               bootstrap={"obj": rec, "det": det})  # fmt: skip


def test_render_results_pools_seeds_with_the_ceiling_and_headroom_share():
    """Three seeds whose test-set resamples agree exactly: the pooled interval is the
    spread of the seeds' mean, computed by pooled_interval; the headroom share divides by
    the diagnose stage's ceiling - original."""
    noise = np.linspace(-0.01, 0.01, 400)  # the same test resamples for every seed
    runs = [seed_run(s, 0.40 + d, d + noise) for s, d in ((0, 0.02), (1, 0.04), (2, 0.06))]
    text = render_results(runs, context())
    ci = pooled_interval(np.array([0.02, 0.04, 0.06]),
                         np.stack([d + noise for d in (0.02, 0.04, 0.06)]), seed=0)  # fmt: skip
    cells = row(text, "edgebox", "## Table 2").split(" | ")
    assert cells[1:5] == [
        "3",
        "40.00",
        "44.00 ± 2.00",
        f"+4.00 [{100 * ci.ci_low:+.2f}, {100 * ci.ci_high:+.2f}]: {ci.verdict}",
    ]
    assert ci.ci_low > 0.01 and ci.verdict == "gain"  # every seed gains; seeds' spread only
    assert cells[5] == f"40% [{ci.ci_low / 0.001:.0f}%, {ci.ci_high / 0.001:.0f}%]"
    ceiling = row(text, "supervised ceiling (diagnose)", "## Table 2").split(" | ")
    assert ceiling[2:6] == ["41.00", "51.00", "+10.00 (headroom)", "—"]
    assert "SCN: the mean over the training seeds" in text
    # the paper-form row holds the mean; a per-seed table lists each run's own interval
    t2 = row(text, "efficientnet_lite0 (ours, scenes), Obj / Img", "## Table 2")
    assert "44.00 / 60.00" in t2
    per_seed = text[text.index("### Per seed") :]
    assert "| edgebox | 2 | 46.00 | +6.00 [-10.00, +10.00]: no measurable difference |" in per_seed
    seeds_det = np.array([0.0, 0.01, 0.02])  # detection: no test noise, the seeds' spread
    det_ci = pooled_interval(seeds_det, np.repeat(seeds_det[:, None], 400, axis=1), seed=0)
    assert row(text, "edgebox", "## Table 4").startswith(
        f"| edgebox | 30.00 | 31.00 ± 1.00 | +1.00 [{100 * det_ci.ci_low:+.2f}, "
        f"{100 * det_ci.ci_high:+.2f}]: {det_ci.verdict} |"
    )
    assert (
        "| edgebox | 1 | 44.00 |" in per_seed
        and "+1.00 [-20.00, +20.00]: no measurable" in per_seed
    )
    assert "- edgebox, detection (area mAP) over 3 seeds: SCN - original +1.00 [" in text
    assert row(text, "edgebox (seed 1)", "## Table 1")
    assert "- edgebox, Obj over 3 seeds: SCN - original +4.00 [" in text
    assert "of the headroom." in text
    assert ("- edgebox over 3 seeds: SCN's held-out explained share 25.00% beats the "
            "no-training ridge baseline's 7.00%.") in text  # fmt: skip
    # a run without its bootstrap record: the mean, but no pooled interval and no verdict
    runs[1].bootstrap = {}
    text = render_results(runs, context())
    assert row(text, "edgebox", "## Table 2").split(" | ")[4] == "+4.00"
    assert "- edgebox, Obj over 3 seeds: SCN - original +4.00 points, no interval" in text


def test_render_results_lowshot_table_has_original_ceiling_and_scn_per_seed_mean():
    def low(nets: dict[str, list[float]]) -> dict:
        return {"k": [1, 2], **{n: {"map_mean": m, "map_std": [0.01, 0.02]}
                                 for n, m in nets.items()}}  # fmt: skip

    runs = [seed_run(s, 0.45, np.zeros(10)) for s in (0, 1)]
    for r, scn in zip(runs, ([0.30, 0.50], [0.34, 0.54]), strict=True):
        r.metrics["classify"]["lowshot"] = {"k": [1, 2, 96], "n_samples": 5, "settings": {
            "obj": low({"original": [0.25, 0.45], "scn": scn}),
            "img": low({"original": [0.5, 0.6], "scn": [0.5, 0.6]})}}  # fmt: skip
    runs[0].metrics["diagnose"]["lowshot"] = {"settings": {"obj": low({"ceiling": [0.4, 0.6]})}}
    text = render_results(runs, context())
    section = text[text.index("## Low-shot") : text.index("## Table 1")]
    assert "5 independent draws per k" in section
    obj = section[section.index("Obj:") : section.index("Img:")]
    assert "| network | k=1 | k=2 |" in obj
    assert "| original | 25.00 ± 1.00 | 45.00 ± 2.00 |" in obj
    assert "| supervised ceiling (diagnose) | 40.00 ± 1.00 | 60.00 ± 2.00 |" in obj
    assert "| edgebox SCN (2 seeds) | 32.00 | 52.00 |" in obj
    assert "ceiling" not in section[section.index("Img:") :]
    # without low-shot results there is no section
    for r in runs:
        del r.metrics["classify"]["lowshot"]
    assert "## Low-shot" not in render_results(runs, context())


def lowshot_seed_runs(noise: np.ndarray) -> list[Run]:
    """Two seeds' runs with low-shot results at k = 1, 2 on Obj: SCN - original +4 and +8
    points at k = 1 (seeds 0 and 1), 0 at k = 2, each bootstrap record its value + noise."""
    runs = [seed_run(s, 0.45, np.zeros(10)) for s in (0, 1)]
    for r, shift in zip(runs, (0.04, 0.08), strict=True):
        r.metrics["classify"]["lowshot"] = {"k": [1, 2], "n_samples": 5, "settings": {"obj": {
            "k": [1, 2],
            "original": {"map_mean": [0.25, 0.45], "map_std": [0.01, 0.01]},
            "scn": {"map_mean": [0.25 + shift, 0.45], "map_std": [0.01, 0.01]}}}}  # fmt: skip
        for k, d in ((1, shift), (2, 0.0)):
            r.bootstrap[f"lowshot_obj_k{k}"] = {"value": d, "diffs": d + noise, "seed": 0,
                                                "n_boot": 400, "n_test": 83}  # fmt: skip
    return runs


def test_render_results_lowshot_differences_pooled_over_seeds_with_verdicts():
    """Per k, the mean over the seeds of SCN - original low-shot mAP, with the interval of
    pooled_interval over the seeds' records (classify's, already pooled over the draws);
    one seed: the run's own ``lowshot_diff``; a run without its record: no interval."""
    noise = np.linspace(-0.01, 0.01, 400)
    runs = lowshot_seed_runs(noise)
    text = render_results(runs, context())
    section = text[text.index("## Low-shot") : text.index("## Table 1")]
    assert "trained - original (points) with the paired bootstrap 95% interval" in section
    k1 = pooled_interval(np.array([0.04, 0.08]), np.stack([0.04 + noise, 0.08 + noise]), seed=0)
    k2 = pooled_interval(np.zeros(2), np.stack([noise, noise]), seed=0)
    assert k1.verdict == "gain" and k2.verdict == "no measurable difference"
    cells = [f"+6.00 [{100 * k1.ci_low:+.2f}, {100 * k1.ci_high:+.2f}]: gain",
             f"+0.00 [{100 * k2.ci_low:+.2f}, {100 * k2.ci_high:+.2f}]: no measurable "
             "difference"]  # fmt: skip
    assert f"| edgebox SCN (2 seeds) | {cells[0]} | {cells[1]} |" in section
    del runs[1].bootstrap["lowshot_obj_k1"]  # no record: the mean, no interval, no verdict
    section = render_results(runs, context())
    assert f"| edgebox SCN (2 seeds) | +6.00 | {cells[1]} |" in section
    one = runs[:1]  # one seed: its own interval from the metrics
    one[0].metrics["classify"]["lowshot_diff"] = {
        "obj": {
            "k1": {"diff": 0.04, "lo": 0.01, "hi": 0.07, "verdict": "gain"},
            "k2": {"diff": 0.0, "lo": -0.02, "hi": 0.02, "verdict": "no measurable difference"},
        }
    }
    section = render_results(one, context())
    assert ("| edgebox SCN | +4.00 [+1.00, +7.00]: gain | +0.00 [-2.00, +2.00]: no measurable "
            "difference |") in section  # fmt: skip


def test_lowshot_difference_figure_has_every_arm_with_its_interval(tmp_path):
    """The figure's data are the table's: per arm and k the pooled difference and interval
    (two seeds: pooled_interval of their records; one seed: its own lowshot_diff); the
    figure is written, and RESULTS.md links it when the runner names it."""
    from experiments.results_report import lowshot_differences, plot_lowshot_differences

    noise = np.linspace(-0.01, 0.01, 400)
    runs = lowshot_seed_runs(noise)
    control = Run("control", "results-control", "ok", params=runs[0].params, seed=0,
                  metrics=json.loads(json.dumps(runs[0].metrics)))  # fmt: skip
    control.metrics["classify"]["lowshot_diff"] = {"obj": {
        "k1": {"diff": -0.05, "lo": -0.09, "hi": -0.01, "verdict": "loss"}}}  # fmt: skip
    control.metrics["classify"]["lowshot"]["settings"]["obj"]["scn"]["map_mean"] = [0.20, 0.45]
    groups = {"edgebox": runs, "control": [control]}
    data = lowshot_differences(groups)
    k1 = pooled_interval(np.array([0.04, 0.08]), np.stack([0.04 + noise, 0.08 + noise]), seed=0)
    (e1, e2), (c1,) = data["obj"]["edgebox"], data["obj"]["control"]  # control: no k = 2 record
    assert e1[0] == 1 and e1[1] == pytest.approx(0.06) and e1[4] == "gain"
    assert e1[2:4] == pytest.approx((k1.ci_low, k1.ci_high), abs=1e-6)  # rounded to 1e-6
    assert e2[0] == 2 and e2[1] == pytest.approx(0) and e2[4] == "no measurable difference"
    assert c1 == (1, pytest.approx(-0.05), -0.09, -0.01, "loss")
    path = tmp_path / "RESULTS_lowshot.png"
    assert plot_lowshot_differences(path, groups)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plot_lowshot_differences(tmp_path / "none.png", {}) and not (
        tmp_path / "none.png").exists()  # fmt: skip
    text = render_results([*runs, control], {**context(), "lowshot_figure": path.name})
    assert "![low-shot differences against k](RESULTS_lowshot.png)" in text
    assert "lowshot.png" not in render_results(runs, context())


def test_render_results_flags_originals_that_differ():
    a = Run("bbox", "results-bbox", "ok", 1.0, "b" * 40, BASE,
            fake_metrics((0.40, 0.45), (0.6, 0.6), (0.3, 0.3)))  # fmt: skip
    b = Run("random", "results-random", "ok", 1.0, "c" * 40, BASE,
            fake_metrics((0.42, 0.45), (0.6, 0.6), (0.3, 0.3)))  # fmt: skip
    b.metrics["synthetic"]["test_mse_offset"] = 2.0
    text = render_results([a, b], context())
    assert "40.00–42.00 / 60.00" in text
    assert "original network's Obj mAP differs between experiments (40.00 to 42.00)" in text
    assert "Identical in all" not in text  # synthetic differs: one row per experiment
    assert row(text, "random", "## Figure 3").startswith("| random | 40 | 2 |")


def test_helpers_and_argument_checks():
    assert pct(None) == "n/a" and pct(0.12345) == "12.35"
    assert params_diff({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 4}) == {
        "a.c": 3,
        "d": 4,
    }
    args = parse_args(["--proposals", "bbox,random", "--set", "train.epochs=1"])
    assert args.mechanisms == ["bbox", "random"] and args.sets == ["train.epochs=1"]
    assert args.baseline_names == ["doersch", "control", "control-bbox", "nooffset-bbox"]
    assert parse_args(["--baselines", ""]).baseline_names == []
    assert parse_args(["--baselines", "control-yolo,doersch"]).baseline_names == [
        "control-yolo", "doersch"]  # fmt: skip
    assert args.seeds == 3 and parse_args(["--seeds", "1"]).seeds == 1
    assert not args.reuse and parse_args(["--reuse"]).reuse
    assert not args.no_run and parse_args(["--no-run"]).no_run
    # --reuse keeps an experiment only when its params hold every requested override
    params = {"proposal": "bbox", "method": "scn", "train": {"seed": 1, "epochs": 1}}
    assert matches(params, ["proposal=bbox", "train.seed=1", "train.epochs=1"])
    assert not matches(params, ["proposal=bbox", "train.seed=0"])
    assert not matches(params, ["train.lr=0.1"])
    for bad in (["--proposals", "bbox,selective"], ["--proposals", "bbox,bbox"],
                ["--set", "proposal=yolo"], ["--set", "train.epochs"], ["--set", "method=scn"],
                ["--baselines", "pathak"], ["--baselines", "control-selective"],
                ["--baselines", "pathak-bbox"], ["--baselines", "control,control"],
                ["--seeds", "0"],
                ["--set", "train.seed=4"]):  # fmt: skip
        with pytest.raises(SystemExit):
            parse_args(bad)


def exp_file(repo: Path, name: str, path: str) -> dict:
    """A file of experiment ``name`` read straight from its git ref (not via dvc)."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"],
                          cwd=repo, capture_output=True, text=True, check=True).stdout  # fmt: skip
    (ref,) = [r for r in refs.split() if r.endswith(f"/{name}")]
    show = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=repo, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return json.loads(show.stdout)


@pytest.fixture(scope="module")
def experiment_repo(tmp_path_factory):
    """A tiny git + DVC repo after ``python -m experiments.results --proposals bbox,random
    --seeds 2`` ran in it (shared by the results and the ablations tests: the pipeline runs
    once; the second seed reruns only train and the SCN side of classify and detect)."""
    tmp_path = tmp_path_factory.mktemp("experiments")
    params = tiny_params({"scenes": {"n_train": 8, "n_test": 8},
                          "classify": {"costs": [1.0], "max_context_pairs": 100}})  # fmt: skip
    repo = make_repo(tmp_path, params)
    before = (repo / "params.yaml").read_bytes()
    out = tmp_path / "out" / "RESULTS.md"
    cmd = [sys.executable, "-m", "experiments.results", "--repo", str(repo),
           "--output", str(out), "--proposals", "bbox,random", "--baselines", "",
           "--seeds", "2", "--set", "train.epochs=1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return repo, before, out


@pytest.mark.slow
def test_open_repo_warns_on_a_detached_head(tmp_path, caplog):
    """A killed `dvc exp run` leaves HEAD detached; the next results run says so."""
    from experiments.results import open_repo

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    git("add", "params.yaml")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "base")
    with caplog.at_level("WARNING", logger="experiments.results"):
        _, commit, dirty, text = open_repo(tmp_path)
    assert text == "seed: 0\n" and dirty == [] and "detached" not in caplog.text
    git("checkout", "-q", "--detach")
    with caplog.at_level("WARNING", logger="experiments.results"):
        assert open_repo(tmp_path)[1] == commit
    assert f"HEAD is detached at {commit[:12]}" in caplog.text
    assert "git branch -f <branch> HEAD" in caplog.text


def test_results_script_runs_two_mechanisms_as_dvc_experiments(experiment_repo):
    repo, before, out = experiment_repo
    text = out.read_text()
    assert (repo / "params.yaml").read_bytes() == before  # the workspace's params come back

    for mech in ("bbox", "random"):
        names = (f"results-{mech}", f"results-{mech}-seed1")  # train.seed 0 and 1
        classify = [exp_file(repo, n, "metrics/details/classify.json") for n in names]
        detect = [exp_file(repo, n, "metrics/details/detect.json") for n in names]
        train = [exp_file(repo, n, "metrics/details/train.json") for n in names]
        pairs = exp_file(repo, names[0], "metrics/details/pairs.json")
        assert train[0]["test_loss"] != train[1]["test_loss"]  # another seed, another model
        obj = [c["obj"] for c in classify]
        assert obj[0]["original"] == obj[1]["original"]  # the same original network
        scn = [o["scn"]["map"] for o in obj]
        diff = sum(o["scn"]["map"] - o["original"]["map"] for o in obj) / 2
        cells = row(text, mech, "## Table 2").split(" | ")
        sd = 100 * abs(scn[0] - scn[1]) / 2**0.5  # the sample standard deviation of two
        assert cells[1:4] == ["2", pct(obj[0]["original"]["map"]),
                              f"{50 * (scn[0] + scn[1]):.2f} ± {sd:.2f}"]  # fmt: skip
        # pooled over both seeds from classify's bootstrap distributions: an interval
        assert cells[4].startswith(f"{100 * diff:+.2f} [") and cells[4].endswith(
            ("gain", "loss", "no measurable difference")
        )
        per_seed = text[text.index("### Per seed") :]
        for seed, o in enumerate(obj):
            ci = o["map_diff_ci"]
            assert (
                f"| {mech} | {seed} | {pct(o['scn']['map'])} | "
                f"{100 * (o['scn']['map'] - o['original']['map']):+.2f} "
                f"[{100 * ci['ci_low']:+.2f}, {100 * ci['ci_high']:+.2f}]: {ci['verdict']} |"
            ) in per_seed
        assert row(text, mech, "## Table 4").startswith(
            f"| {mech} | {pct(detect[0]['original']['map'])} | "
        )
        ctx = classify[1]["context"]
        assert row(text, f"{mech} (seed 1)", "## Table 1").startswith(
            f"| {mech} (seed 1) | {pct(ctx['own']['accuracy'])} | "
            f"{pct(ctx['context']['accuracy'])} | {pct(ctx['both']['accuracy'])} |"
        )
        split = pairs["scn"]["split"]  # the split the SCN trained on (data.scn_split)
        proposals_row = row(text, f"{mech} (seed 0)", "## Proposals")
        assert f"| {split} | " in proposals_row
        assert f"| {pairs['splits'][split]['pairs']} / {pairs['splits']['test']['pairs']} |" in (
            proposals_row
        )
        gain = train[0]["finetune_gain_nonoverlap"]
        assert (
            f"| {pct(train[0]['frozen_test_explained_nonoverlap'])} / "
            f"{pct(train[0]['test_explained_nonoverlap'])} | {100 * gain:+.2f} |"
        ) in proposals_row
        experiments = [line for line in text.splitlines() if line.startswith(f"| {mech} | ")]
        assert all("| ok |" in line for line in experiments[:2])
        assert f'`proposal="{mech}"`' in experiments[0] and "train.seed" not in experiments[0]
        assert "`train.seed=1`" in experiments[1] and "`train.epochs=1`" in experiments[1]
    synthetic = exp_file(repo, "results-bbox", "metrics/details/synthetic.json")
    assert f"| {synthetic['test_mse_no_offset']:.4g} |" in row(text, "ours", "## Figure 3")


@pytest.mark.slow
def test_no_run_reports_what_exists_and_runs_nothing(experiment_repo, tmp_path):
    """--no-run writes the results file from the experiments already made and reports the
    missing ones (a third seed, a mechanism never run) as not run, creating none."""
    repo, before, _ = experiment_repo

    def exps() -> str:
        cmd = ["git", "for-each-ref", "--format=%(refname)", "refs/exps"]
        return subprocess.run(cmd, cwd=repo, capture_output=True, text=True, check=True).stdout

    refs = exps()
    out = tmp_path / "RESULTS.md"
    cmd = [sys.executable, "-m", "experiments.results", "--repo", str(repo), "--no-run",
           "--output", str(out), "--proposals", "bbox,yolo", "--baselines", "",
           "--seeds", "3", "--set", "train.epochs=1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-4000:]  # not every run is there
    assert exps() == refs and (repo / "params.yaml").read_bytes() == before
    text = out.read_text()
    experiments = text[text.index("## Experiments") : text.index("## Table 2")]
    lines = [x for x in experiments.splitlines() if x.startswith(("| bbox |", "| yolo |"))]
    status = {x.split(" | ")[2].strip("`"): x.split(" | ")[3] for x in lines}
    assert status == {"results-bbox": "ok", "results-bbox-seed1": "ok",
                      "results-bbox-seed2": "not run", "results-yolo": "not run",
                      "results-yolo-seed1": "not run", "results-yolo-seed2": "not run"}  # fmt: skip
    assert row(text, "bbox", "## Table 2").split(" | ")[1] == "2"  # the two seeds made
    # an override the experiments were not made with: none of them is kept
    proc = subprocess.run([*cmd[:-2], "--set", "train.epochs=2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 1 and exps() == refs
    assert "| `results-bbox` | ok |" not in out.read_text()


@pytest.mark.slow
def test_ablation_variants_each_start_from_the_base_params(experiment_repo, tmp_path):
    """experiments/ablations.py in the same repo. `dvc exp run -S` leaves its edits in the
    workspace: the second variant must not inherit the first one's (a bug the first real
    ablation run had)."""
    import yaml

    repo, before, _ = experiment_repo
    out = tmp_path / "ABLATIONS.md"
    cmd = [sys.executable, "-m", "experiments.ablations", "--repo", str(repo),
           "--output", str(out),
           "--variant", "first:proposal=bbox,train.epochs=1,detect.iterations=3",
           "--variant", "second:proposal=bbox,train.epochs=1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (repo / "params.yaml").read_bytes() == before
    base = yaml.safe_load(before)
    refs = ["git", "for-each-ref", "--format=%(refname)", "refs/exps"]
    listed = subprocess.run(refs, cwd=repo, capture_output=True, text=True, check=True).stdout
    seen = {}
    for name in ("first", "second"):
        (exp,) = [r for r in listed.split() if r.endswith(f"/ablation-{name}")]
        show = ["git", "show", f"{exp}:params.yaml"]
        seen[name] = yaml.safe_load(
            subprocess.run(show, cwd=repo, capture_output=True, text=True, check=True).stdout
        )
    assert seen["first"]["detect"]["iterations"] == 3
    assert seen["second"]["detect"]["iterations"] == base["detect"]["iterations"] != 3
    assert seen["second"]["train"]["epochs"] == 1
    text = out.read_text()
    for name in ("first", "second"):
        detect = exp_file(repo, f"ablation-{name}", "metrics/details/detect.json")
        line = next(s for s in text.splitlines() if s.startswith(f"| `{name}` |"))
        assert "| ok |" in line
        assert f"{100 * detect['scn']['map']:.2f}" in line


def test_every_run_sets_back_what_a_baseline_changed():
    """`dvc exp run -S` leaves its edits in the workspace: the runs after the shuffled-pairs
    control (and its drift-matched twin) must not inherit train.pairs or train.lr."""
    from experiments import results

    text = "method: scn\ntrain:\n  lr: 1.6e-06\n  pairs: real\n"
    assert results.baseline_resets(text, ["proposal=bbox", "method=scn"]) == ["train.pairs=real"]
    assert results.baseline_resets(text, ["train.pairs=shuffled"]) == ["method=scn"]
    args = results.parse_args(["--control-lr", "3e-05", "--control-lr", "bbox=1.4e-05"])
    try:
        assert args.baseline_names == ["doersch", "control", "control-bbox", "nooffset-bbox",
                                       "control-drift", "control-drift-bbox"]  # fmt: skip
        assert results.baseline_overrides("control-drift", None) == [
            "train.pairs=shuffled", "train.lr=3e-05"]  # fmt: skip
        assert results.baseline_overrides("control-drift", "bbox") == [
            "train.pairs=shuffled", "train.lr=1.4e-05"]  # fmt: skip
        assert results.baseline_overrides("control", "bbox") == ["train.pairs=shuffled"]
        assert "train.lr=1.6e-06" in results.baseline_resets(text, ["method=scn"])
        twice = ["--control-lr", "1e-5", "--control-lr", "2e-5"]
        no_lr = ["--baselines", "control-drift-yolo", "--control-lr", "bbox=1e-5"]
        for bad in (["--control-lr", "0"], ["--control-lr", "selective=1e-5"],
                    ["--control-lr", "bbox=x"], twice, no_lr,
                    ["--control-drift", "bbox:train.seed=3"],
                    ["--control-drift", "train.epochs"], ["--control-drift", "yolo:"],
                    ["--control-lr", "bbox=1e-5", "--control-drift", "bbox:train.epochs=2"],
                    ["--control-drift", "selective:train.epochs=2"]):  # fmt: skip
            with pytest.raises(SystemExit):
                results.parse_args(bad)
        # the drift set by the epoch instead (train.select=best picks the control's epoch)
        args = results.parse_args(["--control-drift", "train.select=last,train.epochs=2",
                                   "--control-drift", "bbox:train.epochs=7"])  # fmt: skip
        assert args.baseline_names[-2:] == ["control-drift", "control-drift-bbox"]
        assert results.baseline_overrides("control-drift", None) == [
            "train.pairs=shuffled", "train.select=last", "train.epochs=2"]  # fmt: skip
        assert results.baseline_overrides("control-drift", "bbox") == [
            "train.pairs=shuffled", "train.epochs=7"]  # fmt: skip
        text2 = "train:\n  pairs: real\n  select: best\n  epochs: 8\n"
        assert results.baseline_resets(text2, ["method=scn"]) == [
            "train.pairs=real", "train.select=best", "train.epochs=8"]  # fmt: skip
    finally:
        results.CONTROL_SETS.clear()
    assert results.parse_args([]).baseline_names == [
        "doersch", "control", "control-bbox", "nooffset-bbox"]  # fmt: skip
    assert results.baseline_resets(text, ["method=scn"]) == ["train.pairs=real"]


def test_baselines_on_another_proposal_and_the_run_order():
    """``control-bbox`` is the shuffled-pairs control on BBox pairs; the runs of one proposal
    run together (a change of proposal reruns the stages before train), baselines first,
    the workspace's own proposal last and its own SCN at its own seed at the very end."""
    from experiments.results import run_order
    from experiments.results_report import baseline_of, proposal_of

    assert baseline_of("control") == ("control", None)
    assert baseline_of("control-bbox") == ("control", "bbox")
    assert baseline_of("control-drift") == ("control-drift", None)
    assert baseline_of("control-drift-yolo") == ("control-drift", "yolo")
    assert baseline_of("doersch-random") == ("doersch", "random")
    assert baseline_of("bbox") is None and baseline_of("control-selective") is None
    runs = [Run(m, f"{m}-{s}", seed=s) for m in ("doersch", "control", "control-bbox")
            for s in (0, 1)]  # fmt: skip
    runs += [Run(m, f"{m}-{s}", seed=s) for m in ("edgebox", "bbox", "random") for s in (0, 1)]
    assert proposal_of(runs[4].mechanism, "edgebox") == "bbox"
    assert proposal_of(runs[0].mechanism, "edgebox") == "edgebox"
    assert proposal_of("random", "edgebox") == "random"
    order = [r.name for r in run_order(runs, "edgebox", 0)]
    assert order == ["control-bbox-0", "control-bbox-1", "bbox-0", "bbox-1", "random-0",
                     "random-1", "doersch-0", "doersch-1", "control-0", "control-1",
                     "edgebox-1", "edgebox-0"]  # fmt: skip


def test_scn_against_the_control_has_a_known_answer_interval():
    """SCN's per-resample differences are the control's plus 0.01 on Obj (so SCN - control
    is 0.01 on every resample: interval [+1.00, +1.00] points, SCN above) and equal on Img
    (no measurable difference); a setting one run lacks has no interval."""
    from experiments.results_report import contrast_interval

    rng = np.random.default_rng(0)
    base = {k: rng.normal(0, 0.01, 200) for k in ("obj", "img")}

    def rec(value: float, diffs: np.ndarray) -> dict:
        return {"value": value, "diffs": diffs, "seed": 0, "n_boot": 200, "n_test": 50}

    def run(mech: str, shift: float, drift: float) -> Run:
        boot = {"obj": rec(0.002 + shift, base["obj"] + shift), "img": rec(0.001, base["img"])}
        metrics = {"train": {"h1_drift": drift, "finetune_gain_nonoverlap": shift / 10}}
        return Run(mech, f"results-{mech}", "ok", params={"proposal": "edgebox"},
                   metrics=metrics, bootstrap=boot, seed=0)  # fmt: skip

    scn, ctl = run("edgebox", 0.01, 0.34), run("control", 0.0, 0.31)
    ci = contrast_interval([scn], [ctl], "obj")
    assert ci["value"] == pytest.approx(0.01)
    assert ci["ci_low"] == pytest.approx(0.01) and ci["ci_high"] == pytest.approx(0.01)
    same = contrast_interval([scn], [ctl], "img")
    assert same["value"] == 0 and same["ci_low"] == same["ci_high"] == 0
    assert contrast_interval([scn], [ctl], "det") is None  # no detection record
    text = render_results([scn, ctl], {"commit": "abc", "dirty": [], "base_params": {}})
    section = text.split("## SCN against the shuffled-pairs control")[1].split("\n## ")[0]
    assert "| Obj mAP | +1.20 | +0.20 | +1.00 [+1.00, +1.00]: SCN above the control |" in section
    assert "| Img mAP | +0.10 | +0.10 | +0.00 [+0.00, +0.00]: no measurable difference |" in section
    assert "| detection mAP | n/a | n/a | n/a |" in section
    assert "h1 drift SCN 0.340, control 0.310" in section
    scn.metrics["train"]["selected_epoch"], ctl.metrics["train"]["selected_epoch"] = 7, 2
    text = render_results([scn, ctl], {"commit": "abc", "dirty": [], "base_params": {}})
    assert "Selected epoch (mean): SCN 7, control 2. Under `train.select: best`" in text
    # no control run: no section
    assert "shuffled-pairs control" not in render_results([scn], {"commit": "abc"})
    # a control on BBox pairs is set against BBox's SCN, not the workspace's proposal's
    bbox, ctl_bbox = run("bbox", 0.02, 0.5), run("control-bbox", 0.005, 0.6)
    text = render_results([scn, ctl, bbox, ctl_bbox],
                          {"commit": "abc", "dirty": [], "base_params": {}})  # fmt: skip
    section = text.split("## SCN against the shuffled-pairs control")[1].split("\n## ")[0]
    assert "`control` against edgebox SCN" in section
    part = section.split("`control-bbox` against bbox SCN")[1]
    assert "h1 drift SCN 0.500, control 0.600" in part
    assert "| Obj mAP | +2.20 | +0.70 | +1.50 [+1.50, +1.50]: SCN above the control |" in part
    assert "| control-bbox | " in text and "control-bbox SCN" not in text


def test_scn_against_its_no_offset_ablation_has_its_own_section():
    """`nooffset-bbox` (train.use_offset=false on BBox pairs) is set against BBox's SCN in a
    section of its own, with the control's interval machinery; the runs after it set the
    offset back."""
    from experiments import results
    from experiments.results_report import baseline_of

    assert baseline_of("nooffset-bbox") == ("nooffset", "bbox")
    assert results.baseline_overrides("nooffset", "bbox") == ["train.use_offset=false"]
    text = "train:\n  pairs: real\n  use_offset: true\n"
    assert results.baseline_resets(text, ["method=scn"]) == [
        "train.pairs=real", "train.use_offset=true"]  # fmt: skip
    assert results.parse_args(["--baselines", "nooffset-bbox"]).baseline_names == [
        "nooffset-bbox"]  # fmt: skip

    base = np.random.default_rng(1).normal(0, 0.01, 200)

    def run(mech: str, shift: float, drift: float) -> Run:
        boot = {"obj": {"value": 0.003 + shift, "diffs": base + shift, "seed": 0,
                        "n_boot": 200, "n_test": 50}}  # fmt: skip
        metrics = {"train": {"h1_drift": drift, "finetune_gain_nonoverlap": -0.04}}
        return Run(mech, f"results-{mech}", "ok", params={"proposal": "edgebox"},
                   metrics=metrics, bootstrap=boot, seed=0)  # fmt: skip

    bbox, flat = run("bbox", 0.0, 0.45), run("nooffset-bbox", 0.004, 0.40)
    text = render_results([bbox, flat], {"commit": "abc", "dirty": [], "base_params": {}})
    assert "## SCN against the shuffled-pairs control" not in text
    section = text.split("## SCN against the SCN without the offset")[1].split("\n## ")[0]
    assert "`nooffset-bbox` against bbox SCN (1 seed(s); SCN: 1): h1 drift SCN 0.450, " \
           "no-offset 0.400" in section  # fmt: skip
    assert "| measure | SCN - original | nooffset-bbox - original | SCN - no-offset |" in section
    assert "| Obj mAP | +0.30 | +0.70 | -0.40 [-0.40, -0.40]: SCN below the no-offset SCN |" \
        in section  # fmt: skip
    assert "| nooffset-bbox | " in text


def test_make_results_passes_its_arguments():
    """`make results RESULTS_ARGS=...` (README) runs the runner with those arguments."""
    cmd = ["make", "-n", "results", f"VENV={sys.prefix}",
           "RESULTS_ARGS=--control-lr bbox=1.6e-05 --reuse"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    out = subprocess.run([*cmd, "--no-print-directory"], cwd=ROOT, capture_output=True,
                         text=True, check=True, env=env).stdout  # fmt: skip
    (line,) = [x for x in out.splitlines() if "-m experiments.results" in x]
    assert line.endswith("-m experiments.results --control-lr bbox=1.6e-05 --reuse")
