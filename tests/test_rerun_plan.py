"""tools/rerun_plan.py on this project's own dvc.yaml: the experiments README and
BENCHMARKS.md name rerun only the stages that read what they change (issue 25, goal 5)."""

from __future__ import annotations

import pytest

from tools.rerun_plan import ROOT, main, plan

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
    # persisted outputs (resume checkpoint, feature caches) keep these out of the run cache
    assert p.no_run_cache == ["train", "classify_original", "classify"]
    assert "never run-caches: train, classify_original, classify." in p.render()


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
