"""Throwaway git + DVC repositories of this project, for the tests and tools/fault_injection.py.

``tiny_params`` is params.yaml at the tiny size (every stage in seconds on a 2-core CPU);
``make_repo`` copies the stage graph, scripts and library into a new git + DVC repo;
``clone_worktree`` copies every tracked file of this checkout as it is now; :class:`Repo`
is the one git and DVC runner (also of ``experiments.results``); ``dvc``,
``git`` and ``make`` run those tools there (``dvc`` and DVC's stages with this interpreter's
environment, ``make`` from a user's shell, :func:`user_env`).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# Tiny settings: every stage in seconds on a 2-core CPU.
TINY = {
    # the SCN pairs from the train split: the tests' hand-made VOC folders have no
    # unlabelled split (the default's pool is covered by tests/test_data_scenes.py)
    "data": {"scn_split": "train"},
    "scenes": {"n_train": 10, "n_val": 2, "n_test": 10, "n_unlabelled": 0, "image_size": 128},
    "proposals": {
        "workers": 1,
        "detect_max_boxes": 10,
        "edgebox": {"max_boxes": 6},
        "random": {"n": 4, "size": 32},
    },
    "pairs": {"max_pairs_per_image": 6},
    "network": {"input_size": 64},
    "targets": {"batch_size": 32, "workers": 0},
    "train": {"epochs": 2, "batch_size": 16, "context_warmup_epochs": 1},
    "classify": {"costs": [0.1, 1.0], "cv_folds": 2, "max_context_pairs": 200},
    "diagnose": {"max_objects": 200, "max_pairs": 300, "ceiling_epochs": 1, "workers": 1},
    "detect": {
        "seeds": 1,
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


class Repo:
    """Runs git and dvc in one repository, with the venv's executables first on PATH."""

    def __init__(self, root: Path):
        self.root = root
        bindir = Path(sys.executable).parent
        self.dvc_bin = str(bindir / "dvc") if (bindir / "dvc").exists() else shutil.which("dvc")
        if self.dvc_bin is None:
            raise SystemExit("dvc not found next to the Python interpreter nor on PATH")
        self.env = {
            **os.environ,
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(root),  # the stages import this repo's pipeline package
        }

    @functools.cached_property
    def cache_dir(self) -> Path:
        """The repository's DVC cache directory (``dvc cache dir``), asked once."""
        cache = Path(self.dvc("cache", "dir").stdout.strip())
        return cache if cache.is_absolute() else self.root / cache

    def run(
        self, *args: str, check: bool = True, timeout: float | None = None
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            list(args), cwd=self.root, env=self.env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}"
            )
        return proc

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("git", *args, check=check)

    def dvc(
        self, *args: str, check: bool = True, timeout: float | None = None
    ) -> subprocess.CompletedProcess:
        return self.run(self.dvc_bin, *args, check=check, timeout=timeout)


def git(cwd: Path, *args: str) -> None:
    Repo(cwd).git(*args)


def dvc(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return Repo(cwd).dvc(*args, check=False, timeout=timeout)


def clone_worktree(dest: Path, params: dict) -> Path:
    """A fresh clone of this checkout as it is now: every tracked file from the working
    tree (so uncommitted edits are tested too), in a new git repo, with ``params``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    for name in filter(None, listed.split("\0")):
        src = ROOT / name
        if src.is_file():  # a tracked file deleted in the working tree is not copied
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone")
    return dest


def user_env() -> dict[str, str]:
    """The environment of a user's shell: no venv on PATH, no PYTHONPATH, not inside make."""
    venvs = {BIN.resolve()}
    if os.environ.get("VIRTUAL_ENV"):
        venvs.add((Path(os.environ["VIRTUAL_ENV"]) / "bin").resolve())
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p and Path(p).resolve() not in venvs]
    drop = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = os.pathsep.join(path)
    return env


def make(repo: Path, target: str, venv: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", target, f"VENV={venv}"],
        cwd=repo,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
