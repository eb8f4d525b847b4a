"""Fault injection: SIGKILL each DVC stage mid-run, rerun, compare with a clean run.

    .venv/bin/python -m tools.fault_injection                     # every stage, tiny size
    .venv/bin/python -m tools.fault_injection --stages scenes,pairs --fraction 0.3

In a temporary git + DVC repo at the tiny size of :mod:`tools.dvc_repo`:

1. clean run: ``dvc repro -s <stage>`` for every stage the chosen ones need, in graph
   order, timing each; the metrics JSON, ``dvc.lock`` hashes and per-file MD5s of every
   output are the reference;
2. for each chosen stage: delete its outputs (as if it had never run), start
   ``dvc repro -s <stage>`` in its own process group and SIGKILL the whole group (DVC and
   the stage) once ``fraction`` of its clean wall time has passed and a temporary file
   (``*.tmp-*``, :data:`pipeline.io.TMP_MARK`) exists, i.e. while it writes; if no
   temporary shows up, at ``deadline`` of its clean wall time;
3. checks that no file at a final output name differs from the clean run's (a half-written
   file taken as complete), that ``dvc status`` reports the stage as changed unless its
   outputs are all complete and equal, then reruns ``dvc repro`` and checks every
   stage's metrics equal the clean run's, timing and throughput keys aside.

Prints one row per stage and writes the rows as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from pipeline.artifacts import DETAILS
from pipeline.io import TMP_MARK
from tools.dvc_repo import BIN, ROOT, dvc, make_repo, tiny_params

log = logging.getLogger("fault_injection")

# Metrics keys that measure time, speed or memory, or record the interruption itself.
VOLATILE = re.compile(r"(^|_)seconds$|_per_s$|^seconds_|^resumed_from_epoch$|_s$|_[ru]ss_mb$")


# Outputs not compared byte for byte: metrics (compared above, minus timings) and plots
# (plots/train_loss.csv had a seconds column until issue 26; now in the train metrics).
UNCOMPARED = ("metrics/", "plots/")


@dataclass
class Result:
    stage: str
    clean_s: float
    killed_at_s: float | None = None
    trigger: str = ""
    leftover_tmp: list[str] = field(default_factory=list)
    bad_final_files: list[str] = field(default_factory=list)
    status_changed: bool | None = None
    outputs_complete: bool = False
    rerun_ok: bool = False
    rerun_stages: list[str] = field(default_factory=list)
    metrics_equal: bool = False
    metrics_diff: list[str] = field(default_factory=list)
    lock_equal: bool = False
    lock_diff: list[str] = field(default_factory=list)
    tmp_after_rerun: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            self.killed_at_s is not None
            and not self.bad_final_files
            and (self.status_changed or self.outputs_complete)
            and self.rerun_ok
            and self.metrics_equal
        )


def strip_volatile(obj):
    """Metrics without timing/throughput keys, recursively."""
    if isinstance(obj, dict):
        return {k: strip_volatile(v) for k, v in obj.items() if not VOLATILE.search(str(k))}
    if isinstance(obj, list):
        return [strip_volatile(v) for v in obj]
    return obj


def diff(a, b, prefix: str = "") -> list[str]:
    """Human-readable differences between two JSON values."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in a or k not in b:
                out.append(f"{key}: only in {'rerun' if k in b else 'clean'}")
            else:
                out += diff(a[k], b[k], key)
        return out
    return [] if a == b else [f"{prefix}: {a!r} != {b!r}"]


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_hashes(repo: Path, outs: list[str]) -> dict[str, str]:
    """relative path -> MD5 of every file under the outputs, temporaries excluded."""
    hashes = {}
    for out in outs:
        p = repo / out
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
        for f in files:
            if TMP_MARK not in str(f.relative_to(repo)):  # in a temporary directory too
                hashes[str(f.relative_to(repo))] = md5(f)
    return hashes


def temporaries(repo: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(repo):
        rel = Path(dirpath).relative_to(repo)
        if rel.parts and rel.parts[0] in (".git", ".dvc"):
            dirnames[:] = []
            continue
        found += [str(rel / n) for n in dirnames + filenames if TMP_MARK in n]
    return sorted(found)


def lock_stages(repo: Path) -> dict:
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"]


def stage_outs(lock: dict, stage: str) -> list[str]:
    return [o["path"] for o in lock[stage].get("outs", [])]


def out_hashes(lock: dict, stage: str) -> dict[str, str]:
    return {o["path"]: o.get("md5", "") for o in lock[stage].get("outs", [])}


def ran(stdout: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", stdout)


def metrics_of(repo: Path, stages: list[str]) -> dict:
    out = {}
    for s in stages:
        f = repo / "metrics" / DETAILS / f"{s}.json"  # everything the stage returned
        out[s] = json.loads(f.read_text()) if f.is_file() else None
    return out


def remove(path: Path) -> None:
    if path.is_dir():
        subprocess.run(["rm", "-rf", str(path)], check=True)
    elif path.exists():
        path.unlink()


def uncache(repo: Path, lock_entry: dict) -> None:
    """Remove a stage's outputs (file objects and directory manifests) from the DVC cache."""
    for out in lock_entry.get("outs", []):
        h = out.get("md5")
        if h:
            remove(repo / ".dvc" / "cache" / "files" / "md5" / h[:2] / h[2:])


def kill_mid_run(
    repo: Path, stage: str, clean_s: float, fraction: float, deadline: float, log_file: Path
) -> tuple[float | None, str]:
    """Start ``dvc repro -s stage``, SIGKILL its process group mid-run; (seconds, trigger)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(repo)}
    before = set(temporaries(repo))  # left by an earlier kill: not this run's writing
    with open(log_file, "w") as fh:
        proc = subprocess.Popen(
            [str(BIN / "dvc"), "repro", "--no-run-cache", "-f", "-s", stage],
            cwd=repo, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        start = time.perf_counter()
        earliest, latest = fraction * clean_s, max(deadline * clean_s, fraction * clean_s + 0.5)
        trigger = ""
        while proc.poll() is None:
            elapsed = time.perf_counter() - start
            if elapsed >= earliest and set(temporaries(repo)) - before:
                trigger = "temporary file"
            elif elapsed >= latest:
                trigger = f"deadline {deadline:.0%}"
            if trigger:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                _wait_group_gone(proc.pid)
                return round(elapsed, 2), trigger
            time.sleep(0.02)
    return None, f"finished before the kill (rc {proc.returncode})"


def _wait_group_gone(pgid: int, timeout: float = 10.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise RuntimeError(f"process group {pgid} survived SIGKILL")


def stage_order() -> list[str]:
    return list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])


def needed_stages(repo: Path, chosen: list[str]) -> list[str]:
    """The chosen stages and their ancestors, in dvc.yaml (graph) order."""
    names = set()
    for stage in chosen:
        dag = dvc(repo, "dag", "--dot", stage)
        if dag.returncode != 0:
            raise RuntimeError(dag.stdout + dag.stderr)
        names |= set(re.findall(r'^"([^"]+)";$', dag.stdout, flags=re.M))
    return [s for s in stage_order() if s in names]


def run(
    workdir: Path, chosen: list[str], fraction: float, deadline: float, extra: dict | None = None
) -> list[Result]:
    repo = make_repo(workdir, tiny_params(extra))
    needed = needed_stages(repo, chosen)
    clean_s = {}
    for s in needed:
        t = time.perf_counter()
        r = dvc(repo, "repro", "-s", s)
        clean_s[s] = round(time.perf_counter() - t, 2)
        if r.returncode != 0:
            raise RuntimeError(f"clean run of {s} failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
        log.info("clean %s: %.1f s", s, clean_s[s])
    ref_lock = lock_stages(repo)
    ref_metrics = {s: strip_volatile(m) for s, m in metrics_of(repo, needed).items()}
    ref_files = {s: file_hashes(repo, stage_outs(ref_lock, s)) for s in needed}

    results = []
    for s in chosen:
        res = Result(stage=s, clean_s=clean_s[s])
        results.append(res)
        # A fast stage may finish before the kill on a lightly loaded machine: try again
        # with earlier kills.
        for attempt in range(4):
            # As if the stage had never completed: no outputs, and none in the DVC cache
            # (else DVC checks them out instead of rerunning the stage).
            for out in stage_outs(ref_lock, s):
                remove(repo / out)
            uncache(repo, ref_lock[s])
            scale = 0.5**attempt
            res.killed_at_s, res.trigger = kill_mid_run(
                repo, s, clean_s[s], fraction * scale, deadline * scale, workdir / f"kill-{s}.log"
            )
            if res.killed_at_s is not None:
                break
        res.leftover_tmp = temporaries(repo)
        now = file_hashes(repo, stage_outs(ref_lock, s))
        res.bad_final_files = [
            f for f, h in now.items() if h != ref_files[s].get(f) and not f.startswith(UNCOMPARED)
        ]
        res.outputs_complete = now == ref_files[s]
        status = dvc(repo, "status", s)
        res.status_changed = f"{s}:" in status.stdout
        rerun = dvc(repo, "repro", "--no-run-cache", *chosen)
        res.rerun_ok = rerun.returncode == 0
        res.rerun_stages = ran(rerun.stdout)
        (workdir / f"rerun-{s}.log").write_text(rerun.stdout + rerun.stderr)
        if not res.rerun_ok:
            log.error("rerun after killing %s failed:\n%s", s, rerun.stdout[-3000:] + rerun.stderr)
            continue
        got = {k: strip_volatile(m) for k, m in metrics_of(repo, needed).items()}
        res.metrics_diff = [f"{k}: {d}" for k in needed for d in diff(ref_metrics[k], got[k])]
        res.metrics_equal = not res.metrics_diff
        lock = lock_stages(repo)
        res.lock_diff = [
            f"{k}: {p}"
            for k in needed
            for p, h in out_hashes(lock, k).items()
            if out_hashes(ref_lock, k).get(p) != h and not p.startswith(UNCOMPARED)
        ]
        res.lock_equal = not res.lock_diff
        res.tmp_after_rerun = temporaries(repo)
        # The next stage is judged against the state this rerun left (complete, and with
        # the same metrics): a stage whose outputs embed timings (data/train) changes
        # its downstream outputs' bytes, though not their metrics.
        ref_lock = lock
        ref_files = {k: file_hashes(repo, stage_outs(ref_lock, k)) for k in needed}
        log.info("%s: %s", s, "PASS" if res.passed else "FAIL")
    return results


def table(results: list[Result]) -> str:
    rows = [
        "| stage | clean (s) | killed at (s), trigger | temporaries left by the kill | "
        "final files unlike clean | status changed | rerun OK (reran) | metrics equal | "
        "output hashes equal | temporaries after rerun |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        killed = f"{r.killed_at_s}, {r.trigger}" if r.killed_at_s is not None else r.trigger
        status = (
            "yes"
            if r.status_changed
            else ("no (outputs complete)" if r.outputs_complete else "**no**")
        )
        metrics = "yes" if r.metrics_equal else "**no**: " + "; ".join(r.metrics_diff[:3])
        rows.append(
            f"| {r.stage} | {r.clean_s} | {killed} | {', '.join(r.leftover_tmp) or 'none'} | "
            f"{', '.join(r.bad_final_files) or 'none'} | {status} | "
            f"{'yes' if r.rerun_ok else '**no**'} ({', '.join(r.rerun_stages) or 'none'}) | "
            f"{metrics} | {'yes' if r.lock_equal else 'no: ' + ', '.join(r.lock_diff)} | "
            f"{', '.join(r.tmp_after_rerun) or 'none'} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", default=",".join(stage_order()), help="comma-separated")
    parser.add_argument(
        "--fraction",
        type=float,
        default=0.3,
        help="earliest kill, as a share of the stage's clean wall time",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=0.8,
        help="kill by this share of the clean wall time without a temporary",
    )
    parser.add_argument("--proposal", default=None, help="override the proposal switch")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the repo here")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = parser.parse_args(argv)  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    chosen = [s for s in args.stages.split(",") if s]
    unknown = set(chosen) - set(stage_order())
    if unknown:
        parser.error(f"--stages: unknown {sorted(unknown)}; allowed: {', '.join(stage_order())}")
    extra = {"proposal": args.proposal} if args.proposal else None
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        results = run(args.workdir, chosen, args.fraction, args.deadline, extra)
    else:
        with tempfile.TemporaryDirectory(prefix="fault-") as tmp:
            results = run(Path(tmp), chosen, args.fraction, args.deadline, extra)
    sys.stdout.write(table(results) + "\n")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
