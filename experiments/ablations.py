"""Ablations behind RESULTS.md's analysis: named DVC experiments, one table, ABLATIONS.md.

    .venv/bin/python -m experiments.ablations                 # the built-in list below
    .venv/bin/python -m experiments.ablations --only default,detect-lr-0.001
    .venv/bin/python -m experiments.ablations --variant "mine:train.epochs=6,detect.lr=0.002"

Each variant is ``dvc exp run --name ablation-<name> -S k=v ...`` in the repository's
workspace, one after the other (stages whose inputs did not change since the previous
run are skipped, so a variant that only changes ``detect.*`` after one that did not
reruns only ``detect``; DVC's run cache holds none of this pipeline's stages:
``tools.rerun_plan``). Every experiment's params are read back with ``dvc exp show --json``, its
metrics from the experiment commit's ``metrics/details/`` files, and written to
ABLATIONS.md: per variant the params it changed, the SCN objective on the held-out pairs
(share of the target variance explained), how far the bottom stream moved from the
original network (``h1_drift``, ``h1_norm_ratio`` of ``metrics/details/train.json``), the
linear-SVM mAP (Obj, Img) and the context accuracy, and
Fast R-CNN's mAP and first-iterations loss for the original and the SCN backbone. The
original network's numbers are in every row: they only change with the evaluation
params, which a variant may change too. Every variant starts from the workspace's
params.yaml (``dvc exp run -S`` leaves its edits in the workspace, so it is written back
before each variant) and it is written back at the end, byte for byte.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from experiments import results, results_report
from pipeline.io import atomic_path

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("experiments.ablations")

# name -> (params overrides, the question it answers)
VARIANTS: dict[str, tuple[tuple[str, ...], str]] = {
    "default": ((), "the committed params.yaml (EdgeBox)"),
    "detect-lr-0.001": (
        ("detect.lr=0.001",),
        "is the detection drop the Fast R-CNN lr (tuned on the original backbone)?",
    ),
    "bbox": (("proposal=bbox",), "the mechanism whose detection collapses"),
    "bbox-detect-lr-0.001": (("proposal=bbox", "detect.lr=0.001"), "the same lr check for BBox"),
    "train-lr-1.6e-5": (
        ("train.lr=1.6e-5",),
        "the SCN lr before 2026-11-22 (10x the default): more drift of h1",
    ),
    "train-lr-1.6e-6": (("train.lr=1.6e-6",), "the default SCN lr, named (a no-op on the default)"),
    "bbox-train-lr-1.6e-5": (("proposal=bbox", "train.lr=1.6e-5"), "the larger SCN lr with BBox"),
    "bbox-train-lr-1.6e-6": (("proposal=bbox", "train.lr=1.6e-6"), "the default SCN lr with BBox"),
    "no-offset": (
        ("train.use_offset=false",),
        "without the offset input (the paper's Figure 3 ablation on real patches)",
    ),
}


@dataclass
class Variant:
    name: str
    overrides: list[str]
    question: str = ""
    run: object = None  # results_report.Run


def parse_variant(text: str) -> Variant:
    """``NAME:KEY=VALUE,KEY=VALUE`` (no overrides: ``NAME:``)."""
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in " /\\"):
        raise ValueError(f"--variant: {text!r}; allowed: NAME:KEY=VALUE[,KEY=VALUE...]")
    sets = [s.strip() for s in rest.split(",") if s.strip()]
    for s in sets:
        if "=" not in s or not s.split("=", 1)[0].strip():
            raise ValueError(f"--variant {name}: {s!r} is not KEY=VALUE")
    return Variant(name, sets, "given on the command line")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    builtin = ", ".join(VARIANTS)
    ap.add_argument("--only", default=None, help=f"comma-separated built-in variants: {builtin}")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:K=V,K=V",
                    help="your own variant (repeatable); replaces the built-in ones")  # fmt: skip
    ap.add_argument("--repo", type=Path, default=ROOT, help="the git + DVC repository")
    ap.add_argument("--output", type=Path, default=None, help="default: <repo>/ABLATIONS.md")
    ap.add_argument("--prefix", default="ablation", help="experiment names: <prefix>-<name>")
    args = ap.parse_args(argv)
    try:
        if args.variant:
            variants = [parse_variant(v) for v in args.variant]
        else:
            names = list(VARIANTS) if args.only is None else [
                n.strip() for n in args.only.split(",") if n.strip()]  # fmt: skip
            bad = [n for n in names if n not in VARIANTS]
            if bad or not names:
                raise ValueError(f"--only: {args.only!r}; allowed: {', '.join(VARIANTS)}")
            variants = [Variant(n, list(VARIANTS[n][0]), VARIANTS[n][1]) for n in names]
    except ValueError as err:
        ap.error(str(err))
    if len({v.name for v in variants}) != len(variants):
        ap.error("variant names must be distinct")
    args.variants = variants
    return args


# --------------------------------------------------------------------------- table

G = results_report.get


def _f(x, fmt="{:.2f}", scale=1.0) -> str:
    return "—" if x is None else fmt.format(x * scale)


def row(v: Variant) -> list[str]:
    m = v.run.metrics if v.run is not None else {}
    cls, det, tr = m.get("classify", {}), m.get("detect", {}), m.get("train", {})
    status = v.run.status if v.run is not None else "not run"
    return [
        f"`{v.name}`",
        ", ".join(f"`{s}`" for s in v.overrides) or "none",
        status,
        _f(G(tr, "test_explained"), "{:.1f}", 100),
        _f(G(tr, "h1_drift")),
        _f(G(tr, "h1_norm_ratio")),
        f"{_f(G(cls, 'obj', 'original', 'map'), scale=100)} / "
        f"{_f(G(cls, 'obj', 'scn', 'map'), scale=100)}",
        f"{_f(G(cls, 'img', 'original', 'map'), scale=100)} / "
        f"{_f(G(cls, 'img', 'scn', 'map'), scale=100)}",
        _f(G(cls, "context", "context", "accuracy"), scale=100),
        f"{_f(G(det, 'original', 'map'), scale=100)} / {_f(G(det, 'scn', 'map'), scale=100)}",
        f"{_f(G(det, 'original', 'loss_first'))} / {_f(G(det, 'scn', 'loss_first'))}",
    ]


HEADER = ["variant", "params changed", "status", "SCN held-out explained (%)", "h1 drift",
          "h1 norm ratio", "Obj mAP original / SCN", "Img mAP original / SCN",
          "context acc. (h3 only)", "detection mAP original / SCN",
          "detection loss, first 10% of iterations, original / SCN"]  # fmt: skip


def render(variants: list[Variant], context: dict) -> str:
    dirty = context["dirty"]
    tree = f" with uncommitted changes to {', '.join(dirty)}" if dirty else "; clean working tree"
    lines = [
        "# Ablations",
        "",
        f"Generated {context['generated']} by `{context['command']}` ({context['dvc_version']})"
        f" on git commit `{context['commit']}`{tree}. "
        f"Base params: the commit's params.yaml (SHA-256 `{context['base_sha256'][:16]}`); "
        "each variant changes only the params listed. Percent, two decimals; the metrics "
        "keys are those of `metrics/details/train.json`, `metrics/details/classify.json` and "
        "`metrics/details/detect.json`.",
        "",
        "- SCN held-out explained: `train.test_explained`, 1 - held-out SCN loss / variance "
        "of the held-out targets.",
        "- h1 drift: `train.h1_drift` = ||h1 - h1_0|| / ||h1_0|| over the held-out bottom "
        "patches (h1_0: the original network's representation); h1 norm ratio: "
        "||h1|| / ||h1_0||.",
        "- context acc.: a linear SVM predicting the top object's class from h3 alone "
        "(Table 1's middle column).",
        "",
        *results_report.table(HEADER, [row(v) for v in variants]),
        "",
        "| variant | question | experiment commit | seconds |",
        "| --- | --- | --- | --- |",
    ]
    for v in variants:
        r = v.run
        rev = f"`{r.rev[:12]}`" if r is not None and r.rev else "—"
        secs = _f(r.seconds, "{:.0f}") if r is not None else "—"
        lines.append(f"| `{v.name}` | {v.question} | {rev} | {secs} |")
    failed = [v for v in variants if v.run is not None and v.run.status != "ok"]
    for v in failed:
        lines += ["", f"`{v.name}` failed:", "", "```", (v.run.error or "")[-1500:], "```"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    repo, commit, dirty, base_text = results.open_repo(args.repo)
    output = (args.output or repo.root / "ABLATIONS.md").resolve()
    params_path = repo.root / "params.yaml"
    workspace_bytes = params_path.read_bytes()
    existing = results.exp_show(repo)
    try:
        for v in args.variants:
            v.run = results_report.Run(mechanism="", name=f"{args.prefix}-{v.name}")
            if v.run.name in existing:
                log.warning("replacing the existing experiment %s of %s", v.run.name, commit[:12])
                repo.dvc("exp", "remove", v.run.name)
            # `dvc exp run -S` edits the workspace's params.yaml and leaves it edited: each
            # variant must start from the base params, not from the previous variant's
            with atomic_path(params_path) as tmp:
                tmp.write_bytes(workspace_bytes)
            results.run_experiment(repo, v.run, v.overrides)
    finally:
        if params_path.read_bytes() != workspace_bytes:
            with atomic_path(params_path) as tmp:
                tmp.write_bytes(workspace_bytes)
            log.info("params.yaml written back; data/, metrics/ and dvc.lock hold the last "
                     "variant (%s)", args.variants[-1].name)  # fmt: skip
    results.collect(repo, [v.run for v in args.variants])
    context = {
        "commit": commit,
        "dirty": dirty,
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            ["python -m experiments.ablations", *(argv if argv is not None else sys.argv[1:])]
        ),
        "dvc_version": repo.dvc("--version").stdout.strip(),
        "base_sha256": hashlib.sha256(base_text.encode()).hexdigest(),
    }
    with atomic_path(output) as tmp:
        tmp.write_text(render(args.variants, context))
    log.info("wrote %s", output)
    return 0 if all(v.run.status == "ok" for v in args.variants) else 1


if __name__ == "__main__":
    sys.exit(main())
