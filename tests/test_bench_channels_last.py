"""bench/bench_channels_last.py at tiny size on the CPU: it runs and reports what
BENCHMARKS.md quotes, with both layouts computing the same outputs. No timed assertions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_run_reports_both_layouts_and_equal_outputs():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    args = ["--backbones", "efficientnet_lite0", "--size", "64", "--batch", "2",
            "--threads", "1", "--repeats", "1", "--train", "--roi-head", "--rois", "2",
            "--roi-size", "7"]  # fmt: skip
    run = subprocess.run(
        [sys.executable, "bench/bench_channels_last.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    (row,) = json.loads(run.stdout)
    assert row["backbone"] == "efficientnet_lite0" and row["threads"] == 1
    for key in ("contiguous_images_per_s", "channels_last_images_per_s",
                "train_contiguous_images_per_s", "train_channels_last_images_per_s",
                "roi_head_contiguous_ms", "roi_head_channels_last_ms"):  # fmt: skip
        assert row[key] > 0, key
    assert row["max_abs_diff"] <= 1e-4 * row["output_scale"]  # float rounding only
    assert row["roi_head_rois"] == "2 x 7x7"
