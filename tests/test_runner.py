"""pipeline.runner: the memory figures every stage's metrics carry."""

from __future__ import annotations

import subprocess
import sys
import time

from pipeline.runner import ChildMemory, peak_rss_mb

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
