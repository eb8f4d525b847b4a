"""SIGKILL a DVC stage mid-run, rerun `dvc repro`: nothing half-written, same metrics.

A reduced run of tools/fault_injection.py (every stage: see BENCHMARKS.md, section
"Fault injection"): the dataset stage, which writes one directory, and the pairs stage,
which writes two HDF5 files, in a tiny temporary DVC repo.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.io import TMP_MARK, atomic_path
from tools import fault_injection as fi


def test_volatile_keys_and_diff():
    a = {"seconds": 1.0, "splits": {"train": {"pairs": 5, "images_per_s": 3.0}}, "train_s": 2,
         "peak_rss_mb": 812.5, "children_peak_uss_mb": 0.0}  # fmt: skip
    b = {"seconds": 9.0, "splits": {"train": {"pairs": 6, "images_per_s": 1.0}}}
    assert fi.strip_volatile(a) == {"splits": {"train": {"pairs": 5}}}
    assert fi.diff(fi.strip_volatile(a), fi.strip_volatile(b)) == ["splits.train.pairs: 5 != 6"]


def test_atomic_path_removes_temporaries_of_dead_writers_only(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    final = tmp_path / "run" / "checkpoint.pt"
    final.parent.mkdir()
    stale = final.with_name(f"{final.name}{TMP_MARK}{dead.stdout.strip()}-deadbeef")
    stale.write_bytes(b"half a checkpoint")
    stale_dir = final.with_name(f"{final.name}{TMP_MARK}{dead.stdout.strip()}-0badcafe")
    (stale_dir / "sub").mkdir(parents=True)
    live = final.with_name(f"{final.name}{TMP_MARK}1-cafecafe")  # pid 1 runs: a live writer
    live.write_bytes(b"being written")
    other = final.with_name(f"model.pt{TMP_MARK}{dead.stdout.strip()}-deadbeef")
    other.write_bytes(b"another file's temporary")
    with atomic_path(final) as tmp:
        tmp.write_bytes(b"complete")
    assert final.read_bytes() == b"complete"
    assert sorted(p.name for p in final.parent.iterdir()) == sorted(
        [final.name, live.name, other.name]
    )


@pytest.mark.slow
def test_killed_stages_leave_nothing_complete_and_rerun_to_the_same_metrics(tmp_path):
    results = fi.run(
        tmp_path, ["scenes", "pairs"], fraction=0.0, deadline=0.5, extra={"proposal": "bbox"}
    )
    table = fi.table(results)
    for r in results:
        assert r.killed_at_s is not None, table  # killed, not finished
        assert r.bad_final_files == [], table  # no partial file under a final name
        assert r.status_changed or r.outputs_complete, table  # DVC reruns it
        assert r.rerun_ok and r.stage in r.rerun_stages, table
        assert r.metrics_equal, table
        assert r.lock_equal, table  # byte-identical outputs: nothing downstream reruns
