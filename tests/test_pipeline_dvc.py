"""End to end: real `dvc repro` runs of the whole pipeline in a temporary git repo, tiny size."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tools.dvc_repo import BIN, ROOT, clone_worktree, dvc, make, make_repo, tiny_params, user_env


@pytest.mark.slow
def test_make_repro_in_a_fresh_clone_without_the_venv_on_path(tmp_path):
    """The README's first command as written, `make repro`, in a clone, from a shell whose
    PATH has no venv (DVC then runs `python stages/...` with whatever python is first)."""
    venv = BIN.parent
    stamp = venv / ".installed"
    if not stamp.is_file():
        pytest.skip(f"{venv} was not made by `make install` (no {stamp.name}); it would reinstall")
    env = user_env()
    python = shutil.which("python", path=env["PATH"])
    assert python is None or BIN.resolve() not in Path(python).resolve().parents
    repo = clone_worktree(tmp_path, tiny_params())
    # The clone's requirements are as old as the venv's install: make must not reinstall.
    before = stamp.stat().st_mtime - 60
    for name in ("requirements.txt", "pyproject.toml"):
        os.utime(repo / name, (before, before))
    run = make(repo, "repro", venv)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "pip install" not in run.stdout  # used the venv as it is
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in stages:
        details = repo / "metrics" / "details" / f"{name}.json"
        assert details.is_file(), f"stage {name} wrote no details"
        assert json.loads(details.read_text())["stage"] == name
        headline = json.loads((repo / "metrics" / f"{name}.json").read_text())
        assert headline[f"{name}_s"] > 0, name  # the DVC metric: the headline figures
    # the stages imported the clone's own pipeline package, not the venv's editable copy
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()
    code = json.loads((repo / "metrics" / "details" / "scenes.json").read_text())["code_version"]
    assert code.endswith("+" + head[:12]), (code, head)
    again = make(repo, "repro", venv)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "didn't change" in again.stdout or "is up to date" in again.stdout
    status = dvc(repo, "status")
    assert "changed" not in status.stdout, status.stdout


@pytest.mark.slow
def test_bad_param_stops_stage_with_one_clear_line(tmp_path):
    repo = make_repo(tmp_path, tiny_params({"scenes": {"image_size": 10}}))
    run = dvc(repo, "repro", "scenes")
    assert run.returncode != 0
    assert "scenes.image_size: 10 is out of range; allowed: >= 64" in run.stderr + run.stdout
    assert not (repo / "data" / "scenes").exists()


@pytest.mark.slow
def test_dvc_repro_diagnose_on_a_folder_of_real_photos(tmp_path):
    """`dvc repro diagnose` on real photographs in VOC layout (tools/real_photos.py): the
    dataset switch, non-square JPEGs, VOC's 20 classes with most absent, few objects."""
    from tools.real_photos import write_real_photos

    params = tiny_params(
        {
            "dataset": "voc2012",
            "data": {"voc_root": "data/real/VOCdevkit", "eval_test_split": "val",
                     "scn_split": "train"},
            "diagnose": {"max_pairs": 200},
        }
    )  # fmt: skip
    repo = make_repo(tmp_path, params)
    write_real_photos(repo / "data" / "real")
    run = dvc(repo, "repro", "diagnose", timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    m = json.loads((repo / "metrics" / "details" / "diagnose.json").read_text())
    assert m["splits"] == {"eval_train": "train", "eval_test": "val", "scn": "train"}
    assert m["n_objects_total"] == {"train": 12, "test": 13}
    # only person (and bus) are present: every other VOC class has no AP, and is said so
    assert set(m["original"]["classes_without_ap"]) >= {"cat", "dog", "aeroplane"}
    assert m["original"]["per_class"]["person"]["ap"] is not None
    assert m["context"]["majority_rate"] > 0 and m["targets"]["n_gt_pairs"]["train"] > 0
    assert m["proposals"]["train"]["patches"] > 0
    assert (repo / "plots" / "diagnose.png").stat().st_size > 1000


@pytest.mark.slow
def test_method_doersch_reruns_training_and_evaluation_only(tmp_path, monkeypatch):
    """`dvc exp run -S method=doersch` after a repro: the switch is a param of train and
    of nothing upstream, so only train and the stages reading model.pt (classify, detect)
    run again; the evaluation stages read the Doersch bottom stream like the SCN's. The
    original network's evaluation (classify_original, detect_original) is not rerun: its
    results are read back, and both networks are still reported side by side. README's
    `dvc exp show` views then print every headline figure readably."""
    repo = make_repo(tmp_path, tiny_params())
    first = dvc(repo, "repro")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "Running stage 'classify_original'" in first.stdout
    assert "Running stage 'detect_original'" in first.stdout
    originals = ("classify_original", "detect_original")
    before = {n: (repo / "metrics" / "details" / f"{n}.json").read_text() for n in originals}
    orig_classify = json.loads(before["classify_original"])
    orig_detect = json.loads(before["detect_original"])
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["method"] = "doersch"  # what `-S method=doersch` writes
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = dvc(repo, "status", "--json")
    assert status.returncode == 0, status.stderr[-2000:]
    assert set(json.loads(status.stdout)) == {"train"}  # the only stage whose params changed
    again = dvc(repo, "repro")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    ran = {name for name in stages if f"Running stage '{name}'" in again.stdout}
    assert ran == {"train", "classify", "detect"}, again.stdout[-3000:]
    for name in originals:
        assert f"Stage '{name}' didn't change" in again.stdout, again.stdout[-3000:]
        assert (repo / "metrics" / "details" / f"{name}.json").read_text() == before[name]
    train = json.loads((repo / "metrics" / "details" / "train.json").read_text())
    assert train["chance_accuracy"] == 0.125 and 0 <= train["test_accuracy"] <= 1
    classify = json.loads((repo / "metrics" / "details" / "classify.json").read_text())
    assert "map" in classify["obj"]["scn"] and "skipped" in classify["context"]
    for setting in ("obj", "img"):  # the original's results, read from classify_original
        assert classify[setting]["original"] == orig_classify[setting]["original"]
        assert "ci_low" in classify[setting]["map_diff_ci"]
    assert (
        classify["lowshot"]["settings"]["obj"]["original"]
        == (orig_classify["lowshot"]["settings"]["obj"]["original"])
    )
    detect = json.loads((repo / "metrics" / "details" / "detect.json").read_text())
    from pipeline.evaluate.detect.original import without_wall_clock

    # read from result.json, which has no wall-clock figures (those are in the metrics)
    assert "map" in detect["scn"] and detect["original"] == without_wall_clock(
        orig_detect["original"]
    )
    status = dvc(repo, "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout
    assert (repo / "data" / "train" / "doersch_train.h5").is_file()
    assert_exp_show_views_readable(repo, monkeypatch)


def readme_exp_show_views() -> list[list[str]]:
    """The `dvc exp show` commands README recommends (its "Configuration" block), as args."""
    lines = (ROOT / "README.md").read_text().splitlines()
    views = [shlex.split(line.split("#")[0]) for line in lines if line.startswith("dvc exp show ")]
    assert len(views) >= 3, "README lists no `dvc exp show` views"
    return views


def assert_exp_show_views_readable(repo: Path, monkeypatch) -> None:
    """Each README view of `dvc exp show` at 200 columns prints every headline figure it
    selects (its --keep pattern) as a column with its value: no `…` anywhere."""
    monkeypatch.setenv("COLUMNS", "200")
    headline = {}
    for path in (repo / "metrics").glob("*.json"):
        headline.update(json.loads(path.read_text()))
    assert {"obj_scn", "obj_diff", "obj_lo", "obj_hi", "det_diff", "headroom"} <= set(headline)
    shown = set()
    for args in readme_exp_show_views():
        run = dvc(repo, *args[1:], "--no-pager")
        assert run.returncode == 0, run.stderr[-2000:]
        assert "…" not in run.stdout, f"{' '.join(args)}:\n{run.stdout}"
        keep = re.compile("|".join(a for i, a in enumerate(args) if args[i - 1] == "--keep"))
        want = [name for name in headline if keep.match(name)]
        assert want, args
        rows = [line.split() for line in run.stdout.splitlines() if line.strip()]
        header = next(r for r in rows if r and r[0] == "Experiment")
        workspace = next(r for r in rows if r and r[0] == "workspace")
        assert set(want) <= set(header), (args, header)
        assert len(workspace) == len(header), (header, workspace)  # a value in every column
        shown.update(want)
    # every headline figure is in one view (the others are the seconds and skipped counts)
    assert shown == set(headline), set(headline) - shown
