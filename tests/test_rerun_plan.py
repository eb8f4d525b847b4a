"""tools/rerun_plan.py on this project's own dvc.yaml: the experiments README and
BENCHMARKS.md name rerun only the stages that read what they change (issue 25, goal 5)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from dvc.repo import Repo

from tools.rerun_plan import ROOT, main, plan, run_cacheable

ALL = {
    "scenes", "yolo", "proposals", "detect_proposals", "pairs", "targets", "diagnose_objects",
    "diagnose", "train", "classify_original", "classify", "detect_original", "detect",
    "synthetic",
}  # fmt: skip


def test_a_training_seed_reruns_training_and_the_two_evaluations_only() -> None:
    p = plan(ROOT, ["train.seed=1"])
    assert set(p.reruns) == {"train", "classify", "detect"}
    assert p.reruns["train"] == "params train.seed"
    assert set(p.kept) == ALL - set(p.reruns)  # the original network's side is reused
    # every stage writes its git-tracked details JSON (an uncached output), and train,
    # classify_original and classify persist outputs: DVC saves none in its run cache
    assert set(p.no_run_cache) == ALL
    assert "never saves there" in p.render() and "train, classify_original" in p.render()


def test_run_cacheable_follows_what_dvc_saves_in_its_run_cache(tmp_path) -> None:
    """Against DVC itself: params run before restore the stages run_cacheable accepts from
    the run cache, and rerun the others (an uncached plain output, a persisted output)."""
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*dvc, "init", "-q"], cwd=tmp_path, check=True)
    stages = {
        "plain": {"outs": ["plain.txt"]},
        "metric": {"outs": ["metric.txt"], "metrics": [{"m.json": {"cache": False}}]},
        "details": {"outs": ["details.txt", {"d.json": {"cache": False}}]},
        "persist": {"outs": [{"persist.txt": {"persist": True}}]},
    }
    spec = {"stages": {}}
    for name, outs in stages.items():
        files = [next(iter(o)) if isinstance(o, dict) else o for v in outs.values() for o in v]
        cmd = " && ".join(f"echo ${{x}} > {f}" for f in files)
        spec["stages"][name] = {"cmd": cmd, "params": ["x"], **outs}

    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec))
    ran = {}
    for x in (1, 2, 1):  # back to params run before
        (tmp_path / "params.yaml").write_text(f"x: {x}\n")
        out = subprocess.run([*dvc, "repro"], cwd=tmp_path, capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
        ran = {name: f"Running stage '{name}'" in out for name in stages}
    assert ran == {"plain": False, "metric": False, "details": True, "persist": True}
    with Repo(str(tmp_path)) as repo:
        cacheable = {s.name: run_cacheable(s) for s in repo.index.stages}
    assert cacheable == {name: not rerun for name, rerun in ran.items()}


def test_another_proposal_method_keeps_the_original_networks_evaluation() -> None:
    p = plan(ROOT, ["proposal=bbox"])
    assert set(p.reruns) == {"yolo", "proposals", "pairs", "targets", "diagnose", "train",
                             "classify", "detect"}  # fmt: skip
    # the yolo stage only rewrites its marker, byte for byte: detect_proposals stays
    assert "byte for byte" in p.reruns["yolo"]
    assert {"detect_proposals", "detect_original", "classify_original"} <= set(p.kept)


def test_yolo_proposals_do_retrain_the_detector_and_what_reads_it() -> None:
    p = plan(ROOT, ["proposal=yolo"])
    assert "byte for byte" not in p.reruns["yolo"]
    assert p.reruns["detect_proposals"] == "upstream: yolo"  # its marker now changes


def test_an_unchanged_value_reruns_nothing_and_bad_keys_are_named(capsys) -> None:
    import yaml

    seed = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["seed"]
    assert plan(ROOT, [f"train.seed={seed}"]).reruns == {}
    with pytest.raises(SystemExit, match=r"'train\.nonexistent' is not a key of params\.yaml"):
        plan(ROOT, ["train.nonexistent=1"])
    with pytest.raises(SystemExit, match="expected key=value"):
        plan(ROOT, ["train.seed"])
    assert main(["-S", "train.pairs=shuffled"]) == 0
    assert "| train | yes | params train.pairs |" in capsys.readouterr().out
