"""The SCN regime search of issue 23: training regimes compared by the fine-tuning gain.

    .venv/bin/python -m experiments.regimes                      # every row below
    .venv/bin/python -m experiments.regimes --only adam-warmup --seeds 0,1,2
    .venv/bin/python -m experiments.regimes --row "mine:train.lr=3e-5,train.epochs=6"

Each row is the train stage (``stages/train.py``, run in this process through
:func:`pipeline.runner.run_stage`) on the workspace's params.yaml with the row's overrides,
reading the workspace's pairs and target caches (``data/pairs``, ``data/targets``) and
writing model, plots and metrics under ``--scratch`` (default ``data/regimes/<row>-s<seed>``),
so the workspace's own ``data/train`` and ``metrics/`` are never touched. A row that
changes what the pairs or targets are made of (``proposal``, ``proposals.*``, ``pairs.*``,
``targets.*``, ``network.*``, ``backbone``) first reruns, into its scratch folder, those
of ``yolo``, ``proposals``, ``pairs`` and ``targets`` the change reaches (``UPSTREAM``;
``targets.amp=true`` reruns targets alone on the workspace's pairs).
``dvc exp run train -S k=v ...`` with the same overrides gives the same figures in
``metrics/train.json`` (the row's command in the table).

The rows are compared by one figure only (issue 23, item 4): the **fine-tuning gain on
non-overlapping pairs**, the SCN's held-out explained share minus that of the same
context module trained on the frozen features (``finetune_gain_nonoverlap`` of
``metrics/train.json``), never by the SVMs. The table (``--out``, default
docs/regimes.md) has per row: the overrides, the held-out explained share of the SCN and
of the frozen baseline on non-overlapping pairs, the gain (mean over seeds and each seed),
the SCN's share on all pairs, the epoch selected and h1's drift.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import build, read_yaml
from pipeline.io import atomic_path, write_json
from pipeline.params import Params
from pipeline.runner import run_stage, setup_logging
from tools.overrides import apply as apply_overrides

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("experiments.regimes")

#: the regime every row starts from, on top of params.yaml: a context warm-up on the
#: cached frozen h1, then the head with Adam, selection among trained epochs only
BASE = (
    "train.optimizer=adam",
    "train.loss=mean",
    "train.select=best",
    "train.epochs=8",
    "train.context_warmup_epochs=2",
    "train.early_stop_patience=2",
    "train.weight_decay=0",
)
#: train.* keys the frozen baseline does not depend on (its head never learns, it has no
#: warm-up end; the context module's lr is lr x context_lr_mult): rows that differ only in
#: these share one baseline, computed once (the train stage would compute the same)
BASELINE_FREE = ("lr", "context_lr_mult", "context_warmup_epochs", "context_lr_after_warmup",
                 "resume", "device", "workers", "preload_max_mb", "frozen_baseline")  # fmt: skip
# name -> (overrides on top of BASE, the question it answers)
ROWS: dict[str, tuple[tuple[str, ...], str]] = {
    "paper-sgd": (
        (
            "train.optimizer=sgd",
            "train.loss=sum",
            "train.lr=1.6e-6",
            "train.select=last",
            "train.epochs=3",
            "train.context_warmup_epochs=0",
            "train.early_stop_patience=0",
            "train.weight_decay=0.0005",
        ),
        "the previous default: SGD on the summed loss, lr 1.6e-6, no warm-up",
    ),
    "adam-1e-4": (
        ("train.lr=1e-4", "train.context_lr_mult=10"),
        "issue 23's row: head Adam 1e-4, context 1e-3",
    ),
    "adam-1e-5": (
        ("train.lr=1e-5", "train.context_lr_mult=100"),
        "a 10x slower head, context 1e-3",
    ),
    "adam-1e-6": (
        ("train.lr=1e-6", "train.context_lr_mult=1000"),
        "a 100x slower head, context 1e-3",
    ),
    "adam-1e-5-context-slow": (
        ("train.lr=1e-5", "train.context_lr_mult=100", "train.context_lr_after_warmup=0.1"),
        "context module slowed 10x once the head learns",
    ),
    "adam-1e-5-context-frozen": (
        ("train.lr=1e-5", "train.context_lr_mult=100", "train.context_lr_after_warmup=0"),
        "context module frozen once the head learns: h1 must move towards what it reads",
    ),
    "adam-1e-5-warmup1-context-frozen": (
        (
            "train.lr=1e-5",
            "train.context_lr_mult=100",
            "train.context_warmup_epochs=1",
            "train.context_lr_after_warmup=0",
        ),
        "one warm-up epoch (where the frozen baseline peaks), then the context module is "
        "frozen and only h1 learns: any gain is context that h1 learned",
    ),
    "adam-1e-4-warmup1-context-frozen": (
        (
            "train.lr=1e-4",
            "train.context_lr_mult=10",
            "train.context_warmup_epochs=1",
            "train.context_lr_after_warmup=0",
        ),
        "the default's schedule with a 10x faster head",
    ),
    "adam-1e-5-warmup1-context-slow": (
        (
            "train.lr=1e-5",
            "train.context_lr_mult=100",
            "train.context_warmup_epochs=1",
            "train.context_lr_after_warmup=0.1",
        ),
        "the default's schedule, the context module slowed 10x instead of frozen",
    ),
    "adam-1e-5-warmup1-context-frozen-layer-norm": (
        (
            "train.lr=1e-5",
            "train.context_lr_mult=100",
            "train.context_warmup_epochs=1",
            "train.context_lr_after_warmup=0",
            "train.target=layer_norm",
        ),
        "the default's schedule on layer-normalised targets",
    ),
    "adam-1e-5-warmup1-context-frozen-bbox": (
        (
            "train.lr=1e-5",
            "train.context_lr_mult=100",
            "train.context_warmup_epochs=1",
            "train.context_lr_after_warmup=0",
            "proposal=bbox",
        ),
        "the default's schedule on ground-truth box pairs (the most object context)",
    ),
    "adam-1e-5-wd": (
        ("train.lr=1e-5", "train.context_lr_mult=100", "train.weight_decay=0.0005"),
        "with weight decay 5e-4",
    ),
    "adam-1e-5-hidden-256": (
        ("train.lr=1e-5", "train.context_lr_mult=100", "train.hidden=256"),
        "a smaller context module (256 hidden units)",
    ),
    "adam-1e-5-layer-norm": (
        ("train.lr=1e-5", "train.context_lr_mult=100", "train.target=layer_norm"),
        "layer-normalised targets (I-JEPA; an ablation beyond the paper)",
    ),
    "adam-1e-5-fc-conv5": (
        ("train.lr=1e-5", "train.context_lr_mult=100", "network.scope=fc+conv5"),
        "the last convolutional block trains too",
    ),
    "adam-1e-5-bbox": (
        ("train.lr=1e-5", "train.context_lr_mult=100", "proposal=bbox"),
        "ground-truth boxes: the pairs with the most object context",
    ),
}
#: the stages upstream of train a row may rebuild into its scratch folder, in order, with
#: the override keys (prefixes) that change what each writes (dvc.yaml's params, as
#: tools.rerun_plan reads them; tests/test_regimes.py checks the two agree). A stage not
#: reached reads the workspace's output, so `targets.amp=true` recomputes targets only.
#: yolo reruns whenever proposals does: it writes into the proposals folder (a marker only,
#: unless the row trains a YOLO).
UPSTREAM: dict[str, tuple[str, ...]] = {
    "yolo": ("proposal", "proposals."),
    "proposals": ("proposal", "proposals."),
    "pairs": ("proposal", "proposals.", "pairs."),
    "targets": ("proposal", "proposals.", "pairs.", "targets.", "network.", "backbone"),
}
#: the stage -> the paths keys of what it writes
UPSTREAM_PATHS = {"yolo": (), "proposals": ("proposals",), "pairs": ("pairs",),
                  "targets": ("targets",)}  # fmt: skip


@dataclass
class Row:
    name: str
    overrides: tuple[str, ...]
    question: str = ""


def parse_row(text: str) -> Row:
    """``name:k=v,k=v`` -> a :class:`Row` (on top of :data:`BASE`)."""
    name, _, rest = text.partition(":")
    if not name or not rest:
        raise SystemExit(f"--row {text!r}: expected NAME:key=value[,key=value...]")
    return Row(name, tuple(s.strip() for s in rest.split(",") if s.strip()), "given")


def upstream_stages(overrides: tuple[str, ...]) -> list[str]:
    """The stages upstream of train whose outputs ``overrides`` change, in run order."""
    keys = [o.split("=", 1)[0] for o in overrides]
    return [st for st, prefixes in UPSTREAM.items() if any(k.startswith(prefixes) for k in keys)]


_BASELINES: dict[str, dict[str, Any]] = {}  # baseline_key -> the frozen_* metrics
_RUNS: dict[str, dict[str, Any]] = {}  # the params of a run (seed included) -> its metrics


def baseline_key(data: dict[str, Any]) -> str:
    """What the frozen baseline of a run with raw params ``data`` depends on."""
    train = {k: v for k, v in data.get("train", {}).items() if k not in BASELINE_FREE}
    train["context_lr"] = float(data["train"]["lr"]) * float(
        data["train"].get("context_lr_mult", 1.0)
    )
    rest = {k: v for k, v in data.items() if k not in ("train", "paths", "doersch")}
    return json.dumps({"train": train, "rest": rest}, sort_keys=True, default=str)


def run_row(row: Row, seed: int, params_file: Path, scratch: Path) -> dict[str, Any]:
    """Train one row at one seed; return its train metrics (the details file's dict). The
    frozen baseline is trained once per :func:`baseline_key` and reused."""
    overrides = (*BASE, *row.overrides, f"train.seed={seed}")
    data = apply_overrides(read_yaml(params_file), overrides, strict=False)
    same = json.dumps(data, sort_keys=True, default=str)  # e.g. a drift probe at the row's lr
    if same in _RUNS:
        log.info("row %s, seed %d: the same params as a run already done; reusing it",
                 row.name, seed)  # fmt: skip
        return dict(_RUNS[same])
    key = baseline_key(data)
    known = _BASELINES.get(key) if data["train"].get("frozen_baseline", True) else None
    if known is not None:
        data["train"]["frozen_baseline"] = False
    out = scratch / f"{row.name}-s{seed}"
    paths = data.setdefault("paths", {})
    for name in ("train", "metrics", "plots"):
        paths[name] = str(out / name)
    upstream = upstream_stages(row.overrides)
    for stage in upstream:
        for name in UPSTREAM_PATHS[stage]:
            paths[name] = str(out / name)
    params = build(Params, data)
    if upstream and not Path(params.paths.targets_file(params.data.scn_split)).is_file():
        for stage in upstream:
            run_stage(stage, params)
    log.info("row %s, seed %d: %s", row.name, seed, " ".join(overrides))
    metrics = run_stage("train", params)
    if known is not None:
        metrics.update(known)
        for sub in ("", "_nonoverlap"):
            metrics[f"finetune_gain{sub}"] = (
                metrics[f"test_explained{sub}"] - known[f"frozen_test_explained{sub}"]
            )
    elif "frozen_test_explained" in metrics:
        _BASELINES[key] = {k: v for k, v in metrics.items() if k.startswith("frozen_")}
    _RUNS[same] = dict(metrics)
    return metrics


#: the drift-matched control keeps its last epoch, never stopping early: its number of
#: epochs sets its drift (under train.select=best, its selected epoch did, not its lr)
LAST_EPOCH = ("train.select=last", "train.early_stop_patience=0")


def match_drift_epochs(
    row: Row, target: float, params_file: Path, scratch: Path
) -> tuple[int, float]:
    """The number of epochs at which ``row``'s shuffled-pairs control, keeping its last
    epoch (:data:`LAST_EPOCH`), moves h1 closest to ``target`` (the row's held-out
    ``h1_drift``): one run of the control for the row's epochs at seed 0, whose per-epoch
    ``h1_drift`` (``train_loss.csv``) says it; the same seed cut at E epochs is that run's
    first E epochs (neither the step schedule nor the data order depends on the total).
    Returns (E, its drift); the warm-up epochs, which leave h1 as it was, are not chosen."""
    import csv

    data = apply_overrides(read_yaml(params_file), (*BASE, *row.overrides), strict=False)
    epochs = int(data["train"]["epochs"])
    warm = int(data["train"].get("context_warmup_epochs") or 0)
    probe = Row(f"{row.name}-control-epochs",
                (*row.overrides, "train.pairs=shuffled", *LAST_EPOCH))  # fmt: skip
    run_row(probe, 0, params_file, scratch)
    with open(scratch / f"{probe.name}-s0" / "plots" / "train_loss.csv") as f:
        drift = {int(r["epoch"]): float(r["h1_drift"]) for r in csv.DictReader(f)}
    choices = {e: d for e, d in drift.items() if e > warm or warm >= epochs}
    best = min(choices, key=lambda e: (abs(choices[e] - target), e))
    log.info("drift matching: the control's h1 drift per epoch %s; %d epochs give %.4g "
             "(target %.4g)", {e: round(d, 4) for e, d in drift.items()}, best, choices[best],
             target)  # fmt: skip
    return best, choices[best]


def control_rows(
    row: Row, runs: list[dict[str, Any]], params_file: Path, scratch: Path
) -> list[Row]:
    """The shuffled-pairs control of ``row`` (issue 24) at the row's own settings, and the
    one whose h1 drift matches the row's (seed 0) by its number of epochs
    (:func:`match_drift_epochs`): the contrast that tells context from movement."""
    same = Row(f"{row.name}-control", (*row.overrides, "train.pairs=shuffled"),
               "null-objective control (shuffled pairs) at the row's settings")  # fmt: skip
    target = runs[0].get("h1_drift")
    if not isinstance(target, int | float) or not target > 0:
        return [same]
    epochs, drift = match_drift_epochs(row, float(target), params_file, scratch)
    matched = Row(
        f"{row.name}-control-drift",
        (*row.overrides, "train.pairs=shuffled", *LAST_EPOCH, f"train.epochs={epochs}"),
        f"the control at the number of epochs whose h1 drift ({drift:.3g}) matches the "
        f"row's ({target:.3g})",
    )  # fmt: skip
    return [same, matched]


#: the figures of one seed's train metrics a table row keeps (``per_seed``), enough to
#: merge seeds run at different times into one row
RUN_KEYS = ("seed", "finetune_gain_nonoverlap", "test_explained_nonoverlap",
            "frozen_test_explained_nonoverlap", "test_explained", "frozen_test_explained",
            "selected_epoch", "selected_is_original", "h1_drift", "train_pairs",
            "test_share_overlap")  # fmt: skip


def runs_of(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-seed figures of a table row (its ``per_seed``; a one-seed row of an earlier
    version of this tool, which kept only the summary, is its own single run)."""
    if "per_seed" in row:
        return [dict(r) for r in row["per_seed"]]
    if len(row.get("seeds", [])) != 1:
        return []  # means over several seeds cannot be split back into runs
    return [{
        "seed": row["seeds"][0], "finetune_gain_nonoverlap": row["gain_nonoverlap"],
        "test_explained_nonoverlap": row["scn_nonoverlap"],
        "frozen_test_explained_nonoverlap": row["frozen_nonoverlap"],
        "test_explained": row["scn_all"], "frozen_test_explained": row["frozen_all"],
        "selected_epoch": row["selected_epoch"][0],
        "selected_is_original": row["selected_is_original"][0], "h1_drift": row["h1_drift"],
        "train_pairs": row["train_pairs"], "test_share_overlap": row["share_overlap"],
    }]  # fmt: skip


def summarise(name: str, overrides: tuple[str, ...], runs: list[dict[str, Any]]) -> dict:
    runs = sorted(runs, key=lambda r: r["seed"])

    def mean(key: str) -> float | None:
        vals = [r.get(key) for r in runs]
        vals = [v for v in vals if isinstance(v, int | float) and v == v]
        return sum(vals) / len(vals) if vals else None

    return {
        "name": name,
        "overrides": list(overrides),
        "seeds": [r["seed"] for r in runs],
        "gain_nonoverlap": mean("finetune_gain_nonoverlap"),
        "gain_nonoverlap_per_seed": [r.get("finetune_gain_nonoverlap") for r in runs],
        "scn_nonoverlap": mean("test_explained_nonoverlap"),
        "frozen_nonoverlap": mean("frozen_test_explained_nonoverlap"),
        "scn_all": mean("test_explained"),
        "frozen_all": mean("frozen_test_explained"),
        "selected_epoch": [r.get("selected_epoch") for r in runs],
        "selected_is_original": [r.get("selected_is_original") for r in runs],
        "h1_drift": mean("h1_drift"),
        "train_pairs": runs[0].get("train_pairs"),
        "share_overlap": runs[0].get("test_share_overlap"),
        "per_seed": [{k: r.get(k) for k in RUN_KEYS} for r in runs],
    }


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "—"
    return f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"


def render(rows: list[dict], questions: dict[str, str], context: dict) -> str:
    lines = [
        "# SCN training regimes, compared by the fine-tuning gain",
        "",
        "Generated by `python -m experiments.regimes` "
        f"({context['date']}, commit {context['commit']}, params {context['params']}). "
        "Each row: the train stage on the workspace's pairs and target caches with the",
        "overrides listed (on top of the base regime below), seeds as listed. The gain is the",
        "SCN's held-out explained share minus that of the same context module trained on the",
        "frozen features (`train.frozen_baseline`), on the held-out pairs whose patches do not",
        "overlap (IoU < 0.05): the only figure rows are compared by (issue 23).",
        "",
        f"Base regime: `{' '.join('-S ' + b for b in BASE)}`.",
        f"Training pairs: {rows[0]['train_pairs'] if rows else '—'}; held-out pairs that "
        f"overlap: {_pct(rows[0]['share_overlap']) if rows else '—'}%.",
        "",
        "| row | question | SCN, no overlap (%) | frozen, no overlap (%) | gain (points; per seed) "
        "| SCN, all pairs (%) | selected epoch | h1 drift | command |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        per_seed = ", ".join(_pct(g, True) for g in r["gain_nonoverlap_per_seed"])
        original = any(r["selected_is_original"])
        epochs = ", ".join(str(e) for e in r["selected_epoch"]) + (
            " (original)" if original else ""
        )
        drift = "—" if r["h1_drift"] is None else f"{r['h1_drift']:.3f}"
        cmd = "dvc exp run train " + " ".join(f"-S {o}" for o in (*BASE, *r["overrides"]))
        lines.append(
            f"| {r['name']} | {questions.get(r['name'], '')} | {_pct(r['scn_nonoverlap'])} | "
            f"{_pct(r['frozen_nonoverlap'])} | **{_pct(r['gain_nonoverlap'], True)}** "
            f"({per_seed}) | {_pct(r['scn_all'])} | {epochs} | {drift} | `{cmd}` |"
        )
    best = max(rows, key=lambda r: r["gain_nonoverlap"] or -1e9) if rows else None
    lines += [
        "",
        f"Largest mean gain: `{best['name']}` ({_pct(best['gain_nonoverlap'], True)} points)."
        if best
        else "",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="comma-separated row names of ROWS")
    p.add_argument("--row", action="append", default=[], help="NAME:key=value,key=value")
    p.add_argument("--seeds", default="0", help="comma-separated train.seed values")
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--scratch", default=str(ROOT / "data" / "regimes"))
    p.add_argument("--out", default=str(ROOT / "docs" / "regimes.md"))
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    p.add_argument(
        "--previous",
        default=None,
        help="a --json file of an earlier run: its rows open the table; a row named again "
        "with the same overrides keeps its earlier seeds and runs only those of --seeds it "
        "lacks (--seeds 0,1,2 adds seeds 1 and 2 to a row measured at seed 0)",
    )
    p.add_argument(
        "--controls",
        action="store_true",
        help="after each row, its shuffled-pairs control at the row's settings and at the "
        "number of epochs (last epoch kept) whose h1 drift matches the row's (seed 0)",
    )
    return p.parse_args(argv)


def write_report(
    rows: list[Row], results: list[dict], params: Path, out: Path, json_path: str | None
) -> None:
    """Write the table (and the JSON) of the rows finished so far."""
    import subprocess

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    context = {"date": dt.date.today().isoformat(), "commit": commit or "?",
               "params": params.name}  # fmt: skip
    questions = {r.name: r.question for r in rows}
    with atomic_path(out) as tmp:
        tmp.write_text(render(results, questions, context))
    if json_path:
        write_json(json_path, {"context": context, "rows": results})
    log.info("wrote %s (%d rows)", out, len(results))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    _BASELINES.clear()
    _RUNS.clear()
    names = [n for n in args.only.split(",") if n] or ([] if args.row else list(ROWS))
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise SystemExit(f"--only: unknown rows {unknown}; allowed: {', '.join(ROWS)}")
    rows = [Row(n, *ROWS[n]) for n in names] + [parse_row(t) for t in args.row]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    results: list[dict] = []
    kept: dict[str, list[dict]] = {}  # row -> the runs of --previous it keeps
    if args.previous:
        again = {r.name: r for r in rows}
        earlier = json.loads(Path(args.previous).read_text())["rows"]
        for r in earlier:
            if r["name"] in again and tuple(r["overrides"]) == again[r["name"]].overrides:
                # the same row again: its earlier seeds stay, only the missing ones run
                kept[r["name"]] = runs_of(r)
        results = [r for r in earlier if r["name"] not in again]
        rows = [Row(r["name"], tuple(r["overrides"]), ROWS.get(r["name"], ((), ""))[1])
                for r in results] + rows  # fmt: skip
    done = {r["name"] for r in results}
    for row in [r for r in rows if r.name not in done]:  # controls are appended
        runs = kept.get(row.name, [])
        have = {run["seed"] for run in runs}
        if have:
            log.info("row %s: seeds %s from --previous", row.name, sorted(have))
        for seed in [s for s in seeds if s not in have]:
            metrics = run_row(row, seed, Path(args.params), Path(args.scratch))
            runs.append({**metrics, "seed": seed})
        results.append(summarise(row.name, row.overrides, runs))
        log.info(
            "row %s: gain on non-overlapping pairs %s points",
            row.name,
            _pct(results[-1]["gain_nonoverlap"], True),
        )
        write_report(rows, results, Path(args.params), Path(args.out), args.json)
        if args.controls:
            for control in control_rows(row, runs, Path(args.params), Path(args.scratch)):
                c_runs = [
                    {**run_row(control, seed, Path(args.params), Path(args.scratch)), "seed": seed}
                    for seed in seeds
                ]
                results.append(summarise(control.name, control.overrides, c_runs))
                rows.append(control)
    write_report(rows, results, Path(args.params), Path(args.out), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
