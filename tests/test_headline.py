"""The headline figures (pipeline/headline.py): what each stage declares as its DVC metric,
chosen from the details it returns; the runner writes both files."""

from __future__ import annotations

import json
import re

import yaml

from pipeline.headline import HEADLINE, headline, lookup
from pipeline.runner import STAGE_NAMES, execute
from tools.dvc_repo import ROOT, tiny_params

DETAILS = {
    "stage": "classify",
    "seconds": 12.5,
    "obj": {"scn": {"map": 0.87, "per_class": {"car": {"ap": 0.9}}},
            "map_diff_ci": {"value": 0.001, "ci_low": -0.005, "ci_high": 0.007}},
    "lowshot": {"k": [1, 2, 4], "settings": {"obj": {"k": [2, 4],
                "scn": {"map_mean": [0.5, 0.6], "maps": [[0.5], [0.6]]}}}},
    "skipped": {"train": {"skipped": 2}, "test": {"skipped": 3}},
    "splits": {"train": {"recall_iou0.5": 0.25}},
    "bad": float("nan"),
}  # fmt: skip


def test_lookup_paths():
    assert lookup(DETAILS, "obj.scn.map") == 0.87
    assert lookup(DETAILS, "splits.train.recall_iou0.5") == 0.25  # a key with a dot of its own
    assert lookup(DETAILS, "skipped.*.skipped") == 5  # summed over the splits
    # a list element by k: the k list of the nearest enclosing dict (settings.obj: [2, 4])
    assert lookup(DETAILS, "lowshot.settings.obj.scn.map_mean[k=4]") == 0.6
    assert lookup(DETAILS, "lowshot.settings.obj.scn.map_mean[k=2]") == 0.5
    for missing in (
        "lowshot.settings.obj.scn.map_mean[k=1]",  # 1 is in lowshot.k, not in obj's k
        "obj.original.map",  # a variant without the key
        "obj.scn",  # a dict is not a figure
        "lowshot.k",  # nor a list
        "bad",  # nor nan
        "seconds.x",
        "nothing.*.skipped",
    ):
        assert lookup(DETAILS, missing) is None, missing


def test_headline_keeps_the_declared_figures_in_order_and_omits_the_missing():
    got = headline("classify", DETAILS)
    assert list(got) == ["obj_scn", "obj_diff", "obj_lo", "obj_hi", "classify_skip", "classify_s"]
    assert got == {"obj_scn": 0.87, "obj_diff": 0.001, "obj_lo": -0.005, "obj_hi": 0.007,
                   "classify_skip": 5, "classify_s": 12.5}  # fmt: skip
    assert headline("classify", {}) == {}


def test_headline_table_covers_every_stage_with_short_unique_names():
    """Every stage has a headline (its seconds at least); names are unique over all stages
    (DVC prefixes a name two files share with the file's path), and have no `.` or `/`,
    which README's `dvc exp show --drop` pattern leaves to params and dependencies."""
    assert set(HEADLINE) == set(STAGE_NAMES)
    names = [name for entries in HEADLINE.values() for name, _ in entries]
    assert len(names) == len(set(names))
    for stage, entries in HEADLINE.items():
        assert (f"{stage}_s", "seconds") in entries, stage
        for name, path in entries:
            assert re.fullmatch(r"[a-z][a-z0-9_]*", name) and len(name) <= 22, name
            assert path and not path.startswith(".") and ".." not in path, path
    # the groups README's --keep patterns select, and no other name caught by them
    for name in names:
        if name.startswith(("obj_", "img_", "det_")):
            assert name.split("_")[1] in ("orig", "scn", "diff", "lo", "hi"), name


def test_execute_writes_details_and_headline(tmp_path):
    """runner.execute: everything the stage returned to metrics/details/<stage>.json, its
    headline figures to metrics/<stage>.json (the DVC metric), keys in the table's order."""
    params = tiny_params({"paths": {"metrics": str(tmp_path / "metrics")}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    returned = {"obj": DETAILS["obj"], "skipped": DETAILS["skipped"]}
    metrics = execute("classify", lambda p: dict(returned), tmp_path / "params.yaml")
    details = json.loads((tmp_path / "metrics" / "details" / "classify.json").read_text())
    assert details == json.loads(json.dumps(metrics)) and details["obj"] == returned["obj"]
    assert details["stage"] == "classify" and details["seconds"] >= 0
    text = (tmp_path / "metrics" / "classify.json").read_text()
    assert list(json.loads(text)) == ["obj_scn", "obj_diff", "obj_lo", "obj_hi",
                                      "classify_skip", "classify_s"]  # fmt: skip
    assert json.loads(text)["classify_s"] == details["seconds"]


def test_dvc_yaml_declares_headline_as_metrics_and_details_as_outputs():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        metrics = [next(iter(m)) for m in stage["metrics"]]
        outs = [o if isinstance(o, str) else next(iter(o)) for o in stage["outs"]]
        assert metrics == [f"${{paths.metrics}}/{name}.json"], name
        assert f"${{paths.metrics}}/details/{name}.json" in outs, name
        details = next(o for o in stage["outs"] if isinstance(o, dict)
                       and f"${{paths.metrics}}/details/{name}.json" in o)  # fmt: skip
        assert next(iter(details.values())) == {"cache": False}, name  # git-tracked
