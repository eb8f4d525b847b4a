"""Issue 24's acceptance bar for a default dataset, computed from a run's metrics.

    .venv/bin/python -m experiments.acceptance                       # params.yaml's paths
    .venv/bin/python -m experiments.acceptance --output acceptance.md --json acceptance.json

Every figure comes from stages that run before any SCN training (``pairs`` and
``diagnose_objects``), so a default is judged before an SCN result on it exists:

- SCN training pairs (``pairs``: ``splits.<data.scn_split>.pairs``): >= 30,000;
- the 95% interval half-width of an Obj difference (``diagnose_objects``:
  ``headroom.map_ci``, the paired bootstrap of ceiling - original over the test objects):
  <= 1/5 of the full-protocol headroom (``headroom.map``);
- the low-shot headroom at k = 1 (``diagnose_objects``: ``lowshot``, ceiling - original
  mean mAP over the draws): >= 8 points;
- context predictability / majority rate (``diagnose_objects``: ``context``): >= 2x;
- GT pairs, target variance explained by the top class (``diagnose_objects``:
  ``class_gt``): >= 20%.

The metrics are read from ``params.yaml``'s ``paths.metrics`` (each stage's full record,
:meth:`~pipeline.artifacts.PathsConfig.details_file`, where the runner writes one, else
its :meth:`~pipeline.artifacts.PathsConfig.metrics_file`). The table goes to stdout (and
``--output``, Markdown; ``--json``, the rows); the exit status is 0 when every criterion
passes, 1 otherwise (a figure that is missing fails, naming the stage to rerun).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from experiments.results_report import get
from pipeline.io import atomic_path

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("experiments.acceptance")

MIN_PAIRS = 30_000  # SCN training pairs
HALF_WIDTH_SHARE = 1 / 5  # the Obj interval's half-width, as a share of the headroom at most
MIN_LOWSHOT_HEADROOM = 0.08  # ceiling - original low-shot Obj mAP at k = 1 (8 points)
LOWSHOT_K = 1
MIN_CONTEXT_RATIO = 2.0  # context predictability / majority rate
MIN_CLASS_GT = 0.20  # share of target variance explained by the top class (GT pairs)


@dataclass(frozen=True)
class Criterion:
    """One row of the bar: the measured value (None: not measured), the bar, and whether
    it passes (a missing figure fails); ``note`` says where it comes from or why missing."""

    name: str
    measured: str
    bar: str
    passed: bool
    note: str
    value: float | None


def _missing(name: str, bar: str, why: str) -> Criterion:
    return Criterion(name, "not measured", bar, False, why, None)


def training_pairs(pairs: dict, scn_split: str) -> Criterion:
    name, bar = "SCN training pairs", f">= {MIN_PAIRS:,}"
    n = get(pairs, "splits", scn_split, "pairs")
    if n is None:
        return _missing(name, bar, f"pairs: no splits.{scn_split}.pairs (run the pairs stage)")
    return Criterion(name, f"{int(n):,}", bar, n >= MIN_PAIRS,
                     f"pairs: splits.{scn_split}.pairs", float(n))  # fmt: skip


def obj_half_width(diagnose: dict) -> Criterion:
    """The half-width of the 95% interval of ceiling - original Obj mAP (paired bootstrap
    over the test objects), against a fifth of that headroom (the full protocol's)."""
    name = "95% interval half-width of an Obj difference (ceiling - original, test split)"
    headroom = get(diagnose, "headroom", "map")
    ci = get(diagnose, "headroom", "map_ci")
    bar = f"<= 1/{round(1 / HALF_WIDTH_SHARE)} of the full-protocol headroom"
    if headroom is None:
        return _missing(name, bar, "diagnose_objects: no headroom.map")
    bar += f" ({100 * headroom:.2f} points: <= {100 * HALF_WIDTH_SHARE * headroom:.2f})"
    if not ci or ci.get("ci_low") is None or ci.get("ci_high") is None:
        return _missing(name, bar, "diagnose_objects: no headroom.map_ci (rerun it with "
                        "classify.bootstrap > 0)")  # fmt: skip
    half = (ci["ci_high"] - ci["ci_low"]) / 2
    note = (f"diagnose_objects: headroom.map_ci [{100 * ci['ci_low']:+.2f}, "
            f"{100 * ci['ci_high']:+.2f}], {ci.get('n_boot', '?')} resamples")  # fmt: skip
    passed = headroom > 0 and half <= HALF_WIDTH_SHARE * headroom
    return Criterion(name, f"{100 * half:.2f} points", bar, passed, note, half)


def lowshot_headroom(diagnose: dict, k: int = LOWSHOT_K) -> Criterion:
    name = f"low-shot headroom (ceiling - original) at k = {k}"
    bar = f">= {100 * MIN_LOWSHOT_HEADROOM:.0f} points"
    low = get(diagnose, "lowshot", "settings", "obj")
    ks = (low or {}).get("k") or []
    if k not in ks:
        return _missing(name, bar, f"diagnose_objects: no low-shot Obj result at k = {k} "
                        "(classify.lowshot_k)")  # fmt: skip
    i = ks.index(k)
    ceiling = get(low, "ceiling", "map_mean")
    original = get(low, "original", "map_mean")
    if not ceiling or not original:
        return _missing(name, bar, "diagnose_objects: lowshot.settings.obj lacks a network")
    d = ceiling[i] - original[i]
    note = (f"diagnose_objects: low-shot Obj, mean over {low.get('n_samples', '?')} draws: "
            f"ceiling {100 * ceiling[i]:.2f}, original {100 * original[i]:.2f}")  # fmt: skip
    return Criterion(name, f"{100 * d:.2f} points", bar, d >= MIN_LOWSHOT_HEADROOM, note, d)


def context_ratio(diagnose: dict) -> Criterion:
    name, bar = "context predictability / majority rate", f">= {MIN_CONTEXT_RATIO:g}x"
    acc = get(diagnose, "context", "accuracy")
    majority = get(diagnose, "context", "majority_rate")
    if acc is None or not majority:
        return _missing(name, bar, "diagnose_objects: no context.accuracy / majority_rate")
    ratio = acc / majority
    note = (f"diagnose_objects: context accuracy {100 * acc:.2f}%, majority rate "
            f"{100 * majority:.2f}%")  # fmt: skip
    return Criterion(name, f"{ratio:.2f}x", bar, ratio >= MIN_CONTEXT_RATIO, note, ratio)


def class_variance(diagnose: dict) -> Criterion:
    name = "GT pairs: target variance explained by the top class"
    bar = f">= {100 * MIN_CLASS_GT:.0f}%"
    r2 = diagnose.get("class_gt") if isinstance(diagnose, dict) else None
    if r2 is None:
        return _missing(name, bar, "diagnose_objects: no class_gt")
    return Criterion(name, f"{100 * r2:.2f}%", bar, r2 >= MIN_CLASS_GT,
                     "diagnose_objects: class_gt (held-out R^2)", r2)  # fmt: skip


def criteria(pairs: dict, diagnose: dict, scn_split: str) -> list[Criterion]:
    """The five rows of the bar from the ``pairs`` and ``diagnose_objects`` metrics."""
    return [
        training_pairs(pairs, scn_split),
        obj_half_width(diagnose),
        lowshot_headroom(diagnose),
        context_ratio(diagnose),
        class_variance(diagnose),
    ]


def markdown(rows: list[Criterion]) -> str:
    lines = [
        "| criterion | measured | accept at | pass | from |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {r.name} | {r.measured} | {r.bar} | {'yes' if r.passed else 'no'} | {r.note} |"
              for r in rows]  # fmt: skip
    verdict = "accepted" if all(r.passed for r in rows) else "not accepted"
    failed = [r.name for r in rows if not r.passed]
    lines += ["", f"Verdict: {verdict}" + (f" (fails: {'; '.join(failed)})" if failed else "")]
    return "\n".join(lines) + "\n"


def read_stage(paths, stage: str) -> dict:
    """A stage's full metrics: its details file where the runner writes one, else its
    metrics file; {} (logged) when neither exists."""
    candidates = []
    if hasattr(paths, "details_file"):
        candidates.append(Path(paths.details_file(stage)))
    candidates.append(Path(paths.metrics_file(stage)))
    for path in candidates:
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except ValueError as err:
                raise SystemExit(f"{path}: not valid JSON ({err})") from None
            if not isinstance(data, dict):
                raise SystemExit(f"{path}: expected a JSON object, got {type(data).__name__}")
            return data
    log.warning("no metrics of stage %s (%s): run it first", stage,
                " or ".join(str(p) for p in candidates))  # fmt: skip
    return {}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--params",
        type=Path,
        default=ROOT / "params.yaml",
        help="the params file whose paths.metrics and data.scn_split are read",
    )
    ap.add_argument("--output", type=Path, default=None, help="also write the table (Markdown)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows (JSON)")
    args = ap.parse_args(argv)  # fmt: skip

    from pipeline.params import load_params

    params = load_params(args.params)
    paths = params.paths
    if not Path(paths.metrics).is_absolute():  # relative to the params file's repository
        paths = dataclasses.replace(paths, metrics=args.params.parent / paths.metrics)
    rows = criteria(read_stage(paths, "pairs"), read_stage(paths, "diagnose_objects"),
                    params.data.scn_split)  # fmt: skip
    text = markdown(rows)
    sys.stdout.write(text)
    if args.output:
        with atomic_path(args.output) as tmp:
            tmp.write_text(text)
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
