"""The ``synthetic`` stage end to end at a tiny size: PNGs, CSV plot, dataset, metrics."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.config import build
from pipeline.params import Params
from pipeline.runner import run_stage
from pipeline.synthetic.generate import read_pairs

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_stage_writes_figures_and_metrics(tmp_path):
    paths = {k: str(tmp_path / k) for k in ("synthetic", "metrics", "plots")}
    synthetic = {
        "n_square": 12, "n_triangle": 12, "n_black": 8, "n_test": 10, "canvas_size": 128,
        "min_size": 16, "max_size": 28, "axis_tolerance": 16, "input_size": 32,
        "hidden": 32, "epochs": 3, "pixel_size": 8, "recon_epochs": [1, 3],
    }  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"paths": paths, "synthetic": synthetic}))
    build(Params, {"paths": paths, "synthetic": synthetic})  # valid
    metrics = run_stage("synthetic", tmp_path / "params.yaml")

    out = tmp_path / "synthetic"
    for name in ("figure3.png", "figure4.png", "samples.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 200
    pairs = read_pairs(out / "pairs.h5")
    assert len(pairs) == 32 and (pairs.split == 1).sum() == 10
    rows = list(csv.DictReader((tmp_path / "plots" / "synthetic.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"offset_test_mse", "no_offset_test_mse", "pixels_test_mse"} <= set(rows[0])
    assert float(rows[-1]["offset_test_mse"]) == pytest.approx(metrics["test_mse_offset"], 1e-4)
    recon = np.load(out / "reconstructions.npz")
    assert recon["recon"].shape == (2, 3, 8, 8, 3) and list(recon["epochs"]) == [1, 3]
    saved = json.loads((tmp_path / "metrics" / "details" / "synthetic.json").read_text())
    assert saved["test_mse_ratio"] == pytest.approx(
        saved["test_mse_offset"] / saved["test_mse_no_offset"]
    )
    assert saved["n_train"] == 22 and saved["n_test"] == 10
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]  # atomic writes


@pytest.mark.slow
def test_two_runs_write_the_same_bytes(tmp_path):
    """Every output of the stage (data/synthetic/, the plot CSV) is byte-identical from run
    to run, the second run in another process with another hash seed (issue 26): PNGs carry
    no date, the NPZ members no time stamps, HDF5 datasets no modification times."""
    synthetic = {
        "n_square": 8, "n_triangle": 8, "n_black": 6, "n_test": 8, "canvas_size": 96,
        "min_size": 16, "max_size": 24, "axis_tolerance": 16, "input_size": 32,
        "hidden": 16, "epochs": 2, "pixel_size": 8, "recon_epochs": [1, 2],
    }  # fmt: skip
    outputs = []
    for run in ("a", "b"):
        root = tmp_path / run
        paths = {k: str(root / k) for k in ("synthetic", "metrics", "plots")}
        root.mkdir()
        (root / "params.yaml").write_text(yaml.safe_dump({"paths": paths, "synthetic": synthetic}))
        if run == "a":
            run_stage("synthetic", root / "params.yaml")
        else:
            params = str(root / "params.yaml")
            code = f"from pipeline.runner import run_stage; run_stage('synthetic', {params!r})"
            env = {**os.environ, "PYTHONHASHSEED": "12345"}
            done = subprocess.run(
                [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(
            {
                str(p.relative_to(root)): p.read_bytes()
                for d in ("synthetic", "plots")
                for p in sorted((root / d).rglob("*"))
                if p.is_file()
            }
        )
    assert {"synthetic/figure3.png", "synthetic/pairs.h5", "plots/synthetic.csv"} <= set(outputs[0])
    assert [f for f in outputs[0] if outputs[0][f] != outputs[1].get(f)] == []
    assert sorted(outputs[0]) == sorted(outputs[1])
