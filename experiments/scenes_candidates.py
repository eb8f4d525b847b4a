"""Judge candidate rules of the generated scenes on the diagnose stage's figures alone.

    .venv/bin/python -m experiments.scenes_candidates                    # the list below
    .venv/bin/python -m experiments.scenes_candidates --only v1,v2
    .venv/bin/python -m experiments.scenes_candidates --candidate "mine:cue_contrast_max=0.4"
    .venv/bin/python -m experiments.scenes_candidates --only v2 --network scope=fc+conv5

Each candidate is a set of ``scenes.*`` overrides of params.yaml's section. Its train and
test splits are generated into a temporary folder and measured with the diagnose stage's
own ground-truth part (:func:`pipeline.diagnose.stage.object_diagnostics`: the original
network's Obj mAP, the supervised ceiling, headroom, context predictability and the share
of target variance explained by the top object's class), with params.yaml's backbone,
network, diagnose and classify settings (``--diagnose KEY=VALUE`` and ``--network
KEY=VALUE`` override them: ``--network scope=fc+conv5`` fine-tunes a deeper ceiling, the
original stays the frozen network). No proposal, pair, target, SCN or SVM-on-SCN result
is computed: a dataset is accepted on these figures before SCN ever runs on it (issue 13,
docs/scenes.md "Acceptance"). The table goes to stdout and, with ``--out``, to a JSON
file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
from pathlib import Path

from pipeline.config import build, to_dict
from pipeline.data.config import DataConfig, ScenesConfig
from pipeline.data.scenes import generate_scenes
from pipeline.data.voc import DatasetRef, open_split
from pipeline.devices import resolve_device
from pipeline.diagnose.stage import cap_objects, object_diagnostics
from pipeline.io import atomic_path
from pipeline.params import load_params
from pipeline.seed import seed_everything

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("experiments.scenes_candidates")

V2 = ("version=2", "cue_probability=1.0", "cue_contrast_min=0.25", "cue_contrast_max=0.6")
# name -> (scenes overrides, the principle it checks); sizes come from --n-train/--n-test
CANDIDATES: dict[str, tuple[tuple[str, ...], str]] = {
    "v1": (("version=1", "cue_probability=0.6"), "the rules before 2026-12 (cue absent 40%)"),
    "v2": (V2, "weak cues always present, opacity 0.25-0.6"),
    "v2-faint": (
        (*V2, "cue_contrast_min=0.15", "cue_contrast_max=0.4"),
        "fainter cues than v2",
    ),
    "v2-bold": ((*V2, "cue_contrast_min=0.5", "cue_contrast_max=1.0"), "bolder cues than v2"),
    "v2-relation": (
        (*V2, "cue_style=relation"),
        "the class only in the centre-rim relation (lighter/darker, more/less saturated)",
    ),
    "v2-parity": (
        (*V2, "cue_style=parity"),
        "each class two opposite combinations of (lighter, more saturated, large centre): "
        "in the crop, but no class linearly apart from the rest",
    ),
    "v2-noisy": ((*V2, "nuisance=2.0"), "v2 with twice the per-object nuisance"),
    "v2-bold-calm": (
        (*V2, "cue_contrast_min=0.5", "cue_contrast_max=1.0", "nuisance=0.5"),
        "bold cues, half the nuisance",
    ),
}

CRITERIA = {  # issue 13's acceptance table
    "headroom": 0.08,
    "min_ceiling_ap": 0.70,
    "context_ratio": 2.0,
    "class_gt": 0.20,
}


def parse_override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"override {text!r}: expected key=value (a scenes.* key)")
    import yaml

    return key.strip(), yaml.safe_load(value)


def override_section(params, section: str, texts: list[str]):
    """``params`` with ``section.KEY=VALUE`` overrides (``--diagnose``, ``--network``)."""
    if not texts:
        return params
    data = to_dict(getattr(params, section))
    for text in texts:
        key, value = parse_override(text)
        if key not in data:
            raise SystemExit(f"--{section} {text!r}: {section}.{key} is not a key")
        data[key] = value
    cls = type(getattr(params, section))
    return dataclasses.replace(params, **{section: build(cls, data, section)})


def scenes_config(base: ScenesConfig, overrides: tuple[str, ...], n_train: int, n_test: int):
    data = to_dict(base)
    data.update({"n_train": n_train, "n_val": 0, "n_test": n_test, "n_unlabelled": 0})
    for text in overrides:
        key, value = parse_override(text)
        if key not in data:
            raise SystemExit(f"override {text!r}: scenes.{key} is not a key of ScenesConfig")
        data[key] = value
    return build(ScenesConfig, data, "scenes")


def measure(name: str, cfg: ScenesConfig, params, workdir: Path) -> dict:
    """Generate ``cfg``'s train/test splits under ``workdir`` and diagnose them."""
    from pipeline.backbones import build_backbone

    generate_scenes(workdir, cfg)
    ref = DatasetRef("scenes", dataclasses.replace(DataConfig(), scenes_root=workdir), cfg)
    dcfg = params.diagnose
    rng = seed_everything(dcfg.seed)
    datasets = {
        role: cap_objects(open_split(ref, split, stage="diagnose"), dcfg.max_objects, rng)
        for role, split in (("train", "train"), ("test", "test"))
    }
    net = params.network
    bb = build_backbone(params.backbone, net.weights, input_size=net.input_size)
    device = resolve_device(dcfg.device, "diagnose.device")
    res = object_diagnostics(
        datasets, bb, net.scope, dcfg, params.classify.costs, params.classify.cv_folds,
        params.pairs.offset_scale, device, rng, solver=params.classify.solver,
    )  # fmt: skip
    per_class = {c: v["ap"] for c, v in res["ceiling"]["per_class"].items()}
    low = min(per_class, key=lambda c: per_class[c] if per_class[c] is not None else 2.0)
    row = {
        "name": name,
        "scope": net.scope,
        "original": res["original"]["map"],
        "ceiling": res["ceiling"]["map"],
        "headroom": res["headroom"]["map"],
        "min_ceiling_ap": per_class[low],
        "min_ceiling_class": low,
        "context_ratio": res["context"]["ratio"],
        "class_gt": res["class_gt"],
        "n_objects": res["n_objects"],
        "original_per_class": {c: v["ap"] for c, v in res["original"]["per_class"].items()},
        "ceiling_per_class": per_class,
    }
    row["accepted"] = all(row[k] is not None and row[k] >= v for k, v in CRITERIA.items())
    return row


def table(rows: list[dict]) -> str:
    head = (
        "| candidate | original | ceiling | headroom | lowest ceiling AP | context / majority "
        "| R^2 class (GT) | meets all |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}"

    def ratio(v):
        return "n/a" if v is None else f"{v:.2f}x"

    return head + "".join(
        f"| {r['name']} | {pct(r['original'])} | {pct(r['ceiling'])} | {pct(r['headroom'])} "
        f"| {pct(r['min_ceiling_ap'])} ({r['min_ceiling_class']}) | {ratio(r['context_ratio'])} "
        f"| {pct(r['class_gt'])} | {'yes' if r['accepted'] else 'no'} |\n"
        for r in rows
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--only", default="", help="comma-separated names from the built-in list")
    ap.add_argument("--candidate", action="append", default=[], help='"name:key=value,key=value"')
    ap.add_argument("--n-train", type=int, default=None, help="default: params' scenes.n_train")
    ap.add_argument("--n-test", type=int, default=None, help="default: params' scenes.n_test")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    ap.add_argument(
        "--diagnose",
        action="append",
        default=[],
        help="diagnose.KEY=VALUE override of the measurement (e.g. ceiling_epochs=20)",
    )
    ap.add_argument(
        "--network",
        action="append",
        default=[],
        help="network.KEY=VALUE override (e.g. scope=fc+conv5: the ceiling fine-tunes "
        "that scope; the original stays the frozen network)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    params = load_params(args.params)
    params = override_section(params, "diagnose", args.diagnose)
    params = override_section(params, "network", args.network)
    chosen = dict(CANDIDATES)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in CANDIDATES]
        if unknown:
            raise SystemExit(f"--only: unknown {unknown}; allowed: {', '.join(CANDIDATES)}")
        chosen = {n: CANDIDATES[n] for n in names}
    for text in args.candidate:
        name, _, rest = text.partition(":")
        chosen[name] = (tuple(x for x in rest.split(",") if x), "from --candidate")
    n_train = args.n_train or params.scenes.n_train
    n_test = args.n_test or params.scenes.n_test
    rows = []
    for name, (overrides, why) in chosen.items():
        cfg = scenes_config(params.scenes, overrides, n_train, n_test)
        log.info("candidate %s (%s): %s", name, why, ", ".join(overrides) or "no overrides")
        with tempfile.TemporaryDirectory(prefix=f"scenes-{name}-") as tmp:
            row = measure(name, cfg, params, Path(tmp))
        row["overrides"] = list(overrides)
        rows.append(row)
        sys.stdout.write(table(rows[-1:]))
        sys.stdout.flush()
        if args.out:
            with atomic_path(Path(args.out)) as tmp_out:
                Path(tmp_out).write_text(json.dumps(rows, indent=1) + "\n")
    sys.stdout.write("\n" + table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
