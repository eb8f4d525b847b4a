"""Per-stage wall time and peak memory of the last run, from ``metrics/details/<stage>.json``.

    make repro && .venv/bin/python -m experiments.stage_table      # markdown table
    .venv/bin/python -m experiments.stage_table --metrics /tmp/copy/metrics

Every stage's details carry ``seconds`` (wall time of the stage function),
``peak_rss_mb`` (peak resident memory of the stage process) and
``children_peak_uss_mb`` (its child processes' own memory; ``pipeline.runner.ChildMemory``),
written by ``pipeline.runner.run_stage``. Stages restored from DVC's cache keep the
figures of the run that produced them. The stages are listed in ``dvc.yaml`` order.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from pipeline.artifacts import DETAILS

ROOT = Path(__file__).resolve().parent.parent


def stage_order(dvc_yaml: Path) -> list[str]:
    return list((yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}))


def rows(metrics_dir: Path, stages: list[str]) -> list[dict]:
    out = []
    for name in stages:
        path = metrics_dir / DETAILS / f"{name}.json"
        if not path.is_file():
            out.append({"stage": name, "missing": True})
            continue
        m = json.loads(path.read_text())
        out.append({
            "stage": name,
            "seconds": m.get("seconds"),
            "peak_rss_mb": m.get("peak_rss_mb"),
            "children_peak_uss_mb": m.get("children_peak_uss_mb"),
        })  # fmt: skip
    return out


def render(table: list[dict]) -> str:
    def f(x, fmt):
        return "n/a" if x is None else fmt.format(x)

    lines = ["| stage | seconds | peak RSS, stage (MiB) | child processes, peak USS (MiB) |",
             "| --- | --- | --- | --- |"]  # fmt: skip
    for r in table:
        if r.get("missing"):
            lines.append(f"| {r['stage']} | not run | | |")
            continue
        lines.append(f"| {r['stage']} | {f(r['seconds'], '{:.1f}')} | "
                     f"{f(r['peak_rss_mb'], '{:.0f}')} | "
                     f"{f(r['children_peak_uss_mb'], '{:.0f}')} |")  # fmt: skip
    done = [r for r in table if not r.get("missing") and r["seconds"] is not None]
    total = sum(r["seconds"] for r in done)
    peak = max((r["peak_rss_mb"] or 0 for r in done), default=0)
    lines.append(f"| **sum / max** | **{total:.1f}** | **{peak:.0f}** | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--metrics", type=Path, default=ROOT / "metrics")
    ap.add_argument("--dvc-yaml", type=Path, default=ROOT / "dvc.yaml")
    args = ap.parse_args(argv)
    sys.stdout.write(render(rows(args.metrics, stage_order(args.dvc_yaml))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
