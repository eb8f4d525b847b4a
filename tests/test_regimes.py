"""experiments.regimes: the regime search of issue 23 on a tiny pair set, end to end."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from experiments import regimes
from pipeline.config import to_dict
from tests.test_train_stage import _params, _prepare

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_workspace(tmp_path):
    """Pairs and target caches of a tiny VOC set and a params.yaml reading them."""
    params = _params(tmp_path, "fc", hidden=16, batch_size=8)
    _prepare(tmp_path, params)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(to_dict(params)))
    return params_file


def test_overrides_parse_like_dvc_and_name_what_needs_new_pairs():
    data = {"train": {"lr": 1.0}, "proposal": "edgebox"}
    overrides = ("train.lr=1e-5", "train.select=best", "pairs.x=true")
    out = regimes.apply_overrides(data, overrides, strict=False)
    assert out["train"] == {"lr": 1e-5, "select": "best"} and out["pairs"] == {"x": True}
    assert data["train"] == {"lr": 1.0}  # the input is left alone
    assert regimes.upstream_stages(("proposal=bbox",))
    assert regimes.upstream_stages(("network.scope=fc+conv5",))
    assert not regimes.upstream_stages(("train.lr=1e-5", "train.hidden=8"))
    assert regimes.upstream_stages(("targets.amp=true",)) == ["targets"]
    row = regimes.parse_row("mine:train.lr=3e-5, train.epochs=4")
    assert row.name == "mine" and row.overrides == ("train.lr=3e-5", "train.epochs=4")
    with pytest.raises(SystemExit, match="NAME:key=value"):
        regimes.parse_row("no-overrides")


@pytest.mark.parametrize(
    "override",
    ["proposal=bbox", "proposals.edgebox.max_boxes=30", "pairs.max_iou=0.3",
     "targets.amp=true", "network.scope=fc+conv5", "train.lr=1e-4"],
)  # fmt: skip
def test_a_row_rebuilds_the_upstream_stages_dvc_would_rerun(override):
    """regimes.UPSTREAM against dvc.yaml (tools.rerun_plan): a row rebuilds exactly the
    stages above train that `dvc exp run -S` would, no more (time) and no fewer (stale)."""
    from tools.rerun_plan import ROOT, plan

    dvc = set(plan(ROOT, [override]).reruns) & set(regimes.UPSTREAM)
    ours = set(regimes.upstream_stages((override,)))
    # yolo writes into the proposals folder: a row that rebuilds proposals in its scratch
    # folder reruns yolo there too (a marker only, unless the row trains a YOLO)
    assert ours - {"yolo"} == dvc - {"yolo"} and ("yolo" in ours) == ("proposals" in ours)


@pytest.mark.slow
def test_rows_train_on_the_workspace_pairs_and_report_the_gain(tmp_path, monkeypatch):
    params_file = tiny_workspace(tmp_path)
    monkeypatch.setattr(regimes, "BASE", ("train.optimizer=adam", "train.loss=mean",
                                          "train.select=best", "train.epochs=3",
                                          "train.context_warmup_epochs=1"))  # fmt: skip
    out, js = tmp_path / "regimes.md", tmp_path / "regimes.json"
    assert regimes.main(["--row", "tiny:train.lr=1e-4", "--seeds", "0,1", "--params",
                         str(params_file), "--scratch", str(tmp_path / "scratch"), "--out",
                         str(out), "--json", str(js)]) == 0  # fmt: skip
    rows = json.loads(js.read_text())["rows"]
    assert [r["name"] for r in rows] == ["tiny"] and rows[0]["seeds"] == [0, 1]
    gains = rows[0]["gain_nonoverlap_per_seed"]
    assert len(gains) == 2 and gains[0] != gains[1]  # two seeds, two runs
    assert rows[0]["gain_nonoverlap"] == pytest.approx(sum(gains) / 2)
    assert rows[0]["selected_epoch"][0] >= 2  # never the warm-up epoch
    text = out.read_text()
    assert "| tiny |" in text and "-S train.lr=1e-4" in text and "dvc exp run train" in text
    # the workspace's own outputs are untouched: the rows wrote under the scratch folder
    assert not (tmp_path / "train").exists()
    assert (tmp_path / "scratch" / "tiny-s1" / "metrics").is_dir()


@pytest.mark.slow
def test_controls_shuffle_the_pairs_and_match_the_drift(tmp_path, monkeypatch):
    """--controls adds the shuffled-pairs control at the row's settings and the one whose
    number of epochs (last epoch kept) brings its h1 drift closest to the row's; cut at
    those epochs, the control reproduces the probe's drift at that epoch."""
    params_file = tiny_workspace(tmp_path)
    base = ("train.optimizer=adam", "train.loss=mean", "train.epochs=4",
            "train.context_warmup_epochs=1", "train.frozen_baseline=false")  # fmt: skip
    monkeypatch.setattr(regimes, "BASE", base)
    js = tmp_path / "regimes.json"
    regimes.main(["--row", "tiny:train.lr=1e-4", "--controls", "--params", str(params_file),
                  "--scratch", str(tmp_path / "scratch"), "--out", str(tmp_path / "r.md"),
                  "--json", str(js)])  # fmt: skip
    rows = {r["name"]: r for r in json.loads(js.read_text())["rows"]}
    assert list(rows) == ["tiny", "tiny-control", "tiny-control-drift"]
    assert "train.pairs=shuffled" in rows["tiny-control"]["overrides"]
    matched = rows["tiny-control-drift"]
    assert {"train.select=last", "train.early_stop_patience=0"} <= set(matched["overrides"])
    epochs = int(matched["overrides"][-1].removeprefix("train.epochs="))
    probe = tmp_path / "scratch" / "tiny-control-epochs-s0" / "plots" / "train_loss.csv"
    drift = {int(r["epoch"]): float(r["h1_drift"]) for r in csv.DictReader(probe.open())}
    assert list(drift) == [1, 2, 3, 4] and drift[1] == 0  # the warm-up leaves h1
    target = rows["tiny"]["h1_drift"]
    assert 2 <= epochs <= 4
    assert abs(drift[epochs] - target) == min(abs(drift[e] - target) for e in (2, 3, 4))
    # the run cut at those epochs is the probe's first epochs
    assert matched["h1_drift"] == pytest.approx(drift[epochs], rel=1e-4)


@pytest.mark.slow
def test_rows_that_differ_only_in_the_head_share_one_frozen_baseline(tmp_path, monkeypatch):
    """The frozen baseline does not depend on the head's lr: the second row reuses the
    first's, and equals the baseline it computes on its own, figure for figure."""
    params_file = tiny_workspace(tmp_path)
    base = ("train.optimizer=adam", "train.loss=mean", "train.epochs=2",
            "train.context_warmup_epochs=1")  # fmt: skip
    monkeypatch.setattr(regimes, "BASE", base)

    def rows(*specs: str) -> dict:
        js = tmp_path / "r.json"
        argv = [a for spec in specs for a in ("--row", spec)]
        regimes.main([*argv, "--params", str(params_file), "--scratch", str(tmp_path / "s"),
                      "--out", str(tmp_path / "r.md"), "--json", str(js)])  # fmt: skip
        return {r["name"]: r for r in json.loads(js.read_text())["rows"]}

    both = rows(
        "a:train.lr=1e-4,train.context_lr_mult=10", "b:train.lr=1e-5,train.context_lr_mult=100"
    )
    details = tmp_path / "s" / "b-s0" / "metrics" / "details" / "train.json"
    # reused, not recomputed: b's own train stage ran without the baseline
    assert "frozen_test_explained" not in json.loads(details.read_text())
    alone = rows("b:train.lr=1e-5,train.context_lr_mult=100")
    assert both["a"]["frozen_nonoverlap"] == both["b"]["frozen_nonoverlap"]
    assert alone["b"]["frozen_nonoverlap"] == both["b"]["frozen_nonoverlap"]
    assert alone["b"]["gain_nonoverlap"] == both["b"]["gain_nonoverlap"]
    assert "frozen_test_explained" in json.loads(details.read_text())  # computed when alone


@pytest.mark.slow
def test_previous_rows_keep_their_seeds_and_only_missing_seeds_run(tmp_path, monkeypatch):
    """--previous with --seeds 0,1 on a row measured at seed 0: seed 0 is kept as it was
    (not retrained), seed 1 runs, and the row's figures are the mean over both."""
    params_file = tiny_workspace(tmp_path)
    base = ("train.optimizer=adam", "train.loss=mean", "train.epochs=2",
            "train.context_warmup_epochs=1")  # fmt: skip
    monkeypatch.setattr(regimes, "BASE", base)
    common = ["--params", str(params_file), "--scratch", str(tmp_path / "s"),
              "--out", str(tmp_path / "r.md")]  # fmt: skip
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    regimes.main(["--row", "t:train.lr=1e-4", "--json", str(first), *common])
    seed0 = tmp_path / "s" / "t-s0" / "metrics" / "details" / "train.json"
    stamp = seed0.stat().st_mtime_ns
    regimes.main(["--row", "t:train.lr=1e-4", "--seeds", "0,1", "--previous", str(first),
                  "--json", str(second), *common])  # fmt: skip
    assert seed0.stat().st_mtime_ns == stamp  # seed 0 was not trained again
    (one,) = json.loads(first.read_text())["rows"]
    (row,) = json.loads(second.read_text())["rows"]
    assert row["seeds"] == [0, 1] and row["per_seed"][0] == one["per_seed"][0]
    gains = [r["finetune_gain_nonoverlap"] for r in row["per_seed"]]
    assert row["gain_nonoverlap"] == pytest.approx(sum(gains) / 2)
    # a one-seed row of the earlier format (no per_seed) is read back as its own run
    legacy = {k: v for k, v in one.items() if k != "per_seed"}
    assert regimes.runs_of(legacy) == one["per_seed"]
