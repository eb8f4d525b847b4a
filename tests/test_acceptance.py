"""experiments/acceptance.py: issue 24's acceptance bar computed from hand-made metrics."""

from __future__ import annotations

import json

import pytest
import yaml

from experiments.acceptance import criteria, main, markdown
from pipeline.artifacts import PathsConfig


def pairs_metrics(n_train: int = 32_000) -> dict:
    return {"splits": {"unlabelled": {"pairs": n_train}, "test": {"pairs": 4_000}}}


def diagnose_metrics() -> dict:
    """Headroom 3 points with a [+2.6, +3.4] interval (half-width 0.4 <= 0.6); low-shot
    k = 1: ceiling 60, original 50 (10 points); context 69% against 23% (3x); R^2 25%."""
    return {
        "headroom": {
            "map": 0.03,
            "map_ci": {"value": 0.03, "ci_low": 0.026, "ci_high": 0.034, "n_boot": 1000,
                       "verdict": "gain", "half_width": 0.004},
        },
        "lowshot": {"k": [1, 2], "n_samples": 5, "settings": {"obj": {
            "k": [1, 2], "original": {"map_mean": [0.50, 0.60]},
            "ceiling": {"map_mean": [0.60, 0.65]}}}},
        "context": {"accuracy": 0.69, "majority_rate": 0.23},
        "class_gt": 0.25,
    }  # fmt: skip


def test_every_criterion_passes_with_its_measured_value():
    rows = criteria(pairs_metrics(), diagnose_metrics(), "unlabelled")
    assert [r.passed for r in rows] == [True] * 5
    values = [(r.measured, r.value) for r in rows]
    assert values[0] == ("32,000", 32000.0)
    assert values[1][0] == "0.40 points" and values[1][1] == pytest.approx(0.004, abs=1e-12)
    assert values[2][0] == "10.00 points" and values[2][1] == pytest.approx(0.10, abs=1e-12)
    assert values[3][0] == "3.00x" and values[3][1] == pytest.approx(3.0, abs=1e-12)
    assert values[4] == ("25.00%", 0.25)
    assert "3.00 points: <= 0.60" in rows[1].bar  # the bar scales with the headroom
    text = markdown(rows)
    assert text.count("| yes |") == 5 and "Verdict: accepted\n" in text


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        (lambda p, d: p["splits"]["unlabelled"].update(pairs=29_999), 0),
        # half-width 0.7 points > 3 / 5 = 0.6
        (lambda p, d: d["headroom"]["map_ci"].update(ci_low=0.023, ci_high=0.037), 1),
        # the same interval passes against a larger headroom: 0.7 <= 4 / 5
        (lambda p, d: d["headroom"].update(map=0.04), None),
        (lambda p, d: d["headroom"].update(map=-0.01), 1),  # no headroom at all
        (lambda p, d: d["lowshot"]["settings"]["obj"]["ceiling"].update(map_mean=[0.579, 0.7]),
         2),  # 7.9 points
        (lambda p, d: d["context"].update(accuracy=0.45), 3),  # 1.96x
        (lambda p, d: d.update(class_gt=0.199), 4),
    ],
)  # fmt: skip
def test_each_criterion_fails_alone_below_its_bar(change, failing):
    pairs, diag = pairs_metrics(), diagnose_metrics()
    change(pairs, diag)
    rows = criteria(pairs, diag, "unlabelled")
    assert [i for i, r in enumerate(rows) if not r.passed] == ([] if failing is None else [failing])


def test_missing_figures_fail_and_say_what_to_rerun():
    diag = diagnose_metrics()
    del diag["headroom"]["map_ci"]
    diag["lowshot"]["settings"]["obj"]["k"] = [2]
    rows = criteria(pairs_metrics(), diag, "train")  # no train split in the pairs metrics
    missing = [r for r in rows if r.value is None]
    assert [rows.index(r) for r in missing] == [0, 1, 2]
    assert all(not r.passed and r.measured == "not measured" for r in missing)
    assert "splits.train.pairs" in rows[0].note
    assert "classify.bootstrap" in rows[1].note and "k = 1" in rows[2].note
    rows = criteria({}, {}, "train")
    assert [r.passed for r in rows] == [False] * 5
    assert "Verdict: not accepted (fails: SCN training pairs;" in markdown(rows)


def test_command_reads_the_metrics_of_the_params_paths(tmp_path, capsys):
    """main(): params.yaml's paths.metrics and data.scn_split; table to stdout and files;
    exit status 0 only when every criterion passes. The details file (a stage's full
    record) wins over the headline metrics file."""
    metrics = tmp_path / "metrics"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"paths": {"metrics": "metrics"},
                                      "data": {"scn_split": "train"}}))  # fmt: skip
    paths = PathsConfig(metrics=metrics)
    pairs = {"splits": {"train": {"pairs": 30_000}}}
    for stage, data in (("pairs", pairs), ("diagnose_objects", diagnose_metrics())):
        paths.metrics_file(stage).parent.mkdir(parents=True, exist_ok=True)
        paths.metrics_file(stage).write_text(json.dumps(data))
    out, js = tmp_path / "acceptance.md", tmp_path / "acceptance.json"
    assert main(["--params", str(params), "--output", str(out), "--json", str(js)]) == 0
    printed = capsys.readouterr().out
    assert (
        printed == out.read_text()
        and "| SCN training pairs | 30,000 | >= 30,000 | yes |" in printed
    )
    rows = json.loads(js.read_text())
    assert len(rows) == 5 and all(r["passed"] for r in rows)
    if hasattr(paths, "details_file"):  # a stage's full record, where the runner writes one
        detail = paths.details_file("pairs")
        detail.parent.mkdir(parents=True, exist_ok=True)
        detail.write_text(json.dumps({"splits": {"train": {"pairs": 12}}}))
        assert main(["--params", str(params)]) == 1
        assert "| SCN training pairs | 12 | >= 30,000 | no |" in capsys.readouterr().out
    paths.metrics_file("diagnose_objects").unlink()
    assert main(["--params", str(params)]) == 1
