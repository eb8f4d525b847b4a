"""pipeline.runner: the memory figures every stage's metrics carry."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import ConfigError
from pipeline.runner import ChildMemory, peak_rss_mb

ROOT = Path(__file__).resolve().parent.parent

# a child that holds ~200 MiB of its own (written, so resident) for 2 s
HOLD = "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(2)"


def test_child_memory_counts_what_children_hold_and_nothing_without_children():
    older = subprocess.Popen([sys.executable, "-c", HOLD])  # running before: not counted
    try:
        time.sleep(0.5)
        with ChildMemory(interval=0.1) as idle:
            time.sleep(0.3)
        assert idle.peak_mb == 0.0
        with ChildMemory(interval=0.1) as mem:
            subprocess.run([sys.executable, "-c", HOLD], check=True)
        assert 150 < mem.peak_mb < 400
    finally:
        older.kill()
        older.wait()
    assert peak_rss_mb() > 20  # this interpreter, in MiB


def test_stage_provenance_is_what_dvc_yaml_declares(tmp_path):
    """One declaration of the params a stage depends on: its dvc.yaml ``params:`` list,
    recorded with their values as the stage's provenance."""
    import yaml

    from pipeline.params import Params
    from pipeline.runner import STAGE_NAMES, declared_params, stage_provenance

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    p = Params()
    for name in STAGE_NAMES:
        keys = declared_params(name)
        assert list(keys) == stages[name].get("params", [])
        assert list(stage_provenance(p, name)) == list(keys)
    prov = stage_provenance(p, "targets")
    assert prov["backbone"] == "efficientnet_lite0"
    assert prov["network.input_size"] == p.network.input_size
    bad = tmp_path / "dvc.yaml"
    bad.write_text(yaml.safe_dump({"stages": {"x": {"cmd": "c", "params": ["train.nope"]}}}))
    with pytest.raises(ConfigError, match=r"'train\.nope' is not a param"):
        stage_provenance(p, "x", bad)
    with pytest.raises(ConfigError, match="stage: 'y' is not in"):
        declared_params("y", bad)
