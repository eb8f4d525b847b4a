"""End to end: real `dvc repro` runs of the whole pipeline in a temporary git repo, tiny size."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# Tiny settings: every stage in seconds on a 2-core CPU.
TINY = {
    "scenes": {"n_train": 10, "n_val": 2, "n_test": 10, "image_size": 128},
    "proposals": {
        "workers": 1,
        "detect_max_boxes": 10,
        "edgebox": {"max_boxes": 6},
        "random": {"n": 4, "size": 32},
    },
    "pairs": {"max_pairs_per_image": 6},
    "network": {"input_size": 64},
    "targets": {"batch_size": 32, "workers": 0},
    "train": {"epochs": 2, "batch_size": 16},
    "classify": {"costs": [0.1, 1.0], "cv_folds": 2, "max_context_pairs": 200},
    "detect": {
        "iterations": 4,
        "lr_step": 3,
        "rois_per_image": 8,
        "min_size": 64,
        "max_size": 128,
        "n_examples": 1,
    },
    "synthetic": {
        "n_square": 12,
        "n_triangle": 12,
        "n_black": 8,
        "n_test": 10,
        "canvas_size": 128,
        "min_size": 16,
        "max_size": 28,
        "axis_tolerance": 16,
        "input_size": 32,
        "hidden": 32,
        "epochs": 2,
        "pixel_size": 8,
        "recon_epochs": [1, 2],
    },
}


def deep_update(base: dict, patch: dict) -> dict:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def tiny_params(extra: dict | None = None) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    deep_update(params, TINY)
    for key, value in (extra or {}).items():
        if key in params and isinstance(params[key], dict):
            deep_update(params[key], value)
        else:
            params[key] = value
    return params


def make_repo(dest: Path, params: dict) -> Path:
    """A git + DVC repo with the project's stage graph, scripts and library."""
    for name in ("dvc.yaml", ".dvcignore"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "stages", dest / "stages")
    shutil.copytree(
        ROOT / "pipeline", dest / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    (dest / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", dest / ".dvc" / "config")
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return dest


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True)


def dvc(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [str(BIN / "dvc"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_dvc_repro_whole_pipeline_then_noop(tmp_path):
    repo = make_repo(tmp_path, tiny_params())
    dag = dvc(repo, "dag")
    assert dag.returncode == 0, dag.stderr
    assert "scenes" in dag.stdout
    run = dvc(repo, "repro")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in stages:
        metrics = repo / "metrics" / f"{name}.json"
        assert metrics.is_file(), f"stage {name} wrote no metrics"
        assert json.loads(metrics.read_text())["stage"] == name
    again = dvc(repo, "repro")
    assert again.returncode == 0
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
