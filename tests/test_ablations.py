"""experiments/ablations.py: variant parsing and the ABLATIONS.md table (pure, from metrics dicts).

The real run of two variants is in tests/test_results.py (it reuses that module's repo).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.ablations import VARIANTS, Variant, parse_args, parse_variant, render
from experiments.results_report import Run
from tests.helpers.reports import fake_metrics

ROOT = Path(__file__).resolve().parent.parent


def test_builtin_variants_and_subsets():
    args = parse_args([])
    assert [v.name for v in args.variants] == list(VARIANTS)
    args = parse_args(["--only", "default,detect-lr-0.001"])
    assert [(v.name, v.overrides) for v in args.variants] == [
        ("default", []), ("detect-lr-0.001", ["detect.lr=0.001"])]  # fmt: skip
    with pytest.raises(SystemExit):
        parse_args(["--only", "default,nonesuch"])


def test_variant_syntax():
    v = parse_variant("mine:train.epochs=6, detect.lr=0.002")
    assert (v.name, v.overrides) == ("mine", ["train.epochs=6", "detect.lr=0.002"])
    assert parse_variant("plain:").overrides == []
    for bad in ("noname", ":train.lr=1", "a b:train.lr=1", "x:train.lr"):
        with pytest.raises(ValueError, match="variant"):
            parse_variant(bad)
    with pytest.raises(SystemExit):
        parse_args(["--variant", "a:train.lr=1", "--variant", "a:train.lr=2"])


def test_table_shows_each_variant_from_its_metrics():
    m = fake_metrics(obj=(0.80, 0.79), img=(0.90, 0.91), det=(0.25, 0.05), context=0.4)
    m["train"].update({"h1_drift": 3.01, "h1_norm_ratio": 4.5})
    m["detect"]["original"]["loss_first"] = 1.81
    m["detect"]["scn"]["loss_first"] = 15.87
    done = Run("", "ablation-bbox", status="ok", rev="b" * 40, metrics=m, seconds=42)
    ok = Variant("bbox", ["proposal=bbox"], "why?", done)
    bad = Run("", "ablation-broken", status="failed", error="train.lr: must be > 0")
    failed = Variant("broken", ["train.lr=-1"], "q", bad)
    ctx = {"commit": "a" * 40, "dirty": [], "generated": "now",
           "command": "python -m experiments.ablations", "dvc_version": "3.67.1",
           "base_sha256": "f" * 64, "base_params": {}}  # fmt: skip
    text = render([ok, failed], ctx)
    line = next(s for s in text.splitlines() if s.startswith("| `bbox` | `proposal=bbox`"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:] == ["ok", "25.0", "3.01", "4.50", "80.00 / 79.00", "90.00 / 91.00",
                         "40.00", "25.00 / 5.00", "1.81 / 15.87"]  # fmt: skip
    assert "| `broken` | `train.lr=-1` | failed | — |" in text
    assert "train.lr: must be > 0" in text and "`bbbbbbbbbbbb`" in text


def test_stage_table_reads_every_stage_in_dvc_order(tmp_path):
    import json

    from experiments.stage_table import main, render, rows, stage_order

    order = stage_order(ROOT / "dvc.yaml")
    assert order[0] == "scenes" and "detect" in order and len(order) == len(set(order))
    details = tmp_path / "details"  # the stages' details, where the memory figures are
    details.mkdir()
    (details / "scenes.json").write_text(json.dumps(
        {"seconds": 5.84, "peak_rss_mb": 612.3, "children_peak_uss_mb": 0.0}))  # fmt: skip
    (details / "train.json").write_text(json.dumps({"seconds": 13.0, "peak_rss_mb": 1041.4}))
    table = rows(tmp_path, ["scenes", "pairs", "train"])
    text = render(table)
    assert "| scenes | 5.8 | 612 | 0 |" in text and "| pairs | not run | | |" in text
    assert (
        "| train | 13.0 | 1041 | n/a |" in text
        and "| **sum / max** | **18.8** | **1041** |" in text
    )
    assert main(["--metrics", str(tmp_path)]) == 0
