"""Which stages an experiment reruns, and why: the dvc.yaml graph read for a params change.

    .venv/bin/python -m tools.rerun_plan -S train.seed=1
    .venv/bin/python -m tools.rerun_plan -S proposal=bbox -S pairs.max_iou=0.3

A stage reruns when a params key it lists in dvc.yaml changes value (``reason: params``)
or when a stage it depends on reruns and so rewrites an output it reads (``reason:
upstream``); every other stage is reused from DVC's cache. This is what ``dvc exp run -S
...`` does, decided before anything runs (``dvc repro --dry`` lists the first kind only).
One output is known not to change when its stage reruns: the ``yolo`` stage's marker while
neither the old nor the new params train a YOLO (``pipeline.proposals.yolo.skip_reason``),
since its content is independent of the method chosen (issue 25, goal 5: no stage does
work twice; ``tests/test_rerun_plan.py`` pins the plans BENCHMARKS.md lists). It also
names the stages DVC's run cache never restores (DVC saves no run-cache entry for a
stage with a ``persist: true`` output or with an uncached output that is neither a metric
nor a plot, such as every stage's git-tracked ``metrics/details/<stage>.json``): going
back to params run before reruns those.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tools.overrides import apply, lookup

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Plan:
    reruns: dict[str, str] = field(default_factory=dict)  # stage -> why
    kept: list[str] = field(default_factory=list)  # in dvc.yaml order
    # stages DVC never saves in its run cache, in dvc.yaml order (run_cacheable): params
    # run before do not restore them
    no_run_cache: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = ["| stage | reruns? | why |", "| --- | --- | --- |"]
        for name, why in self.reruns.items():
            lines.append(f"| {name} | yes | {why} |")
        lines += [f"| {name} | no | nothing it reads changes |" for name in self.kept]
        if self.no_run_cache:
            lines += ["", "Params run before restore a stage from DVC's run cache instead of "
                      "rerunning it, except the stages DVC never saves there (a persisted "
                      "output: resume checkpoint, feature caches; or an uncached output "
                      "that is no metric: the git-tracked details JSON): "
                      f"{', '.join(self.no_run_cache)}. They rerun (same seed, same "
                      "figures); `dvc exp apply NAME` restores an experiment's outputs "
                      "from the DVC cache instead."]  # fmt: skip
        return "\n".join(lines)


def run_cacheable(stage: Any) -> bool:
    """Whether running ``stage`` (a dvc Stage) saves an entry in DVC's run cache: not with a
    ``persist: true`` output (dvc/stage/cache.py, ``_can_hash``), nor with an uncached
    output that is neither a metric nor a plot (dvc/stage/__init__.py, ``Stage.run``:
    ``run_cache=not no_commit and not no_cache_outs``)."""
    return not any(
        out.persist or not (out.use_cache or out.is_metric or out.is_plot) for out in stage.outs
    )


def _yolo_output_unchanged(old: dict[str, Any], new: dict[str, Any]) -> bool:
    from pipeline.config import build
    from pipeline.params import Params
    from pipeline.proposals.yolo import skip_reason

    a, b = build(Params, old), build(Params, new)
    return bool(skip_reason(a.proposal, a.proposals)) and bool(skip_reason(b.proposal, b.proposals))


#: stage -> test that its rerun rewrites its outputs byte for byte (downstream not touched)
STABLE_OUTPUTS = {"yolo": _yolo_output_unchanged}


def plan(root: Path, overrides: list[str]) -> Plan:
    """The rerun plan of ``overrides`` on the project at ``root`` (its dvc.yaml, params.yaml)."""
    from dvc.repo import Repo

    old = yaml.safe_load((root / "params.yaml").read_text())
    new = apply(old, overrides)
    changed = [k.partition("=")[0] for k in overrides if lookup(old, k.partition("=")[0])
               != lookup(new, k.partition("=")[0])]  # fmt: skip
    with Repo(str(root)) as repo:
        stages = list(repo.index.stages)
        graph = repo.index.graph  # edge stage -> a stage it depends on
        order = {s.addressing: k for k, s in enumerate(stages)}
        result = Plan()

        # dvc.yaml's order is upstream first, which the walk below relies on
        def stable(name: str) -> bool:
            return name in STABLE_OUTPUTS and STABLE_OUTPUTS[name](old, new)

        for stage in sorted(stages, key=lambda s: order[s.addressing]):
            keys = [
                p
                for dep in stage.deps
                if type(dep).__name__ == "ParamsDependency"
                for p in dep.params
            ]
            hit = [c for c in changed if any(c == p or c.startswith(p + ".") for p in keys)]
            ups = [
                u.addressing
                for u in graph.successors(stage)
                if u.addressing in result.reruns and not stable(u.addressing)
            ]
            if hit:
                why = "params " + ", ".join(hit)
                if stable(stage.addressing):
                    why += " (its output comes out byte for byte the same: nothing below reruns)"
                result.reruns[stage.addressing] = why
            elif ups:
                result.reruns[stage.addressing] = "upstream: " + ", ".join(sorted(ups))
            else:
                result.kept.append(stage.addressing)
            if not run_cacheable(stage):
                result.no_run_cache.append(stage.addressing)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-S", "--set-param", action="append", default=[], dest="overrides")
    p.add_argument("--root", default=str(ROOT))
    args = p.parse_args(argv)
    if not args.overrides:
        raise SystemExit("give at least one -S key=value")
    sys.stdout.write(plan(Path(args.root), args.overrides).render() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
