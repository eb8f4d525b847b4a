"""The classify stage's SVMs: the Newton solver vs the sklearn ``LinearSVC`` reference,
on the same features, same run (results in BENCHMARKS.md, section Classify).

    .venv/bin/python bench/bench_classify.py --data data          # features of a real run
    .venv/bin/python bench/bench_classify.py --generated          # generated, default shape
    .venv/bin/python bench/bench_classify.py --data data --sets obj_original context

With ``--data`` it reads the classify stages' feature caches
(``<data>/original/classify/original_*.h5``, ``<data>/classify/scn_*.h5``, each
``{obj,img}_{train,test}``) and builds the context
experiment's inputs with the stage's own code (``context_features``: the trained model
``<data>/train/model.pt`` and the dataset of ``--params`` with its scenes under
``<data>/scenes``). ``--generated`` makes features of the default's shape instead:
about 2,000 objects x 1,280 dims, 10 classes, non-negative with class structure, 200
multi-label images, and 2,000 context pairs whose "context" block is a nearly constant
sigmoid output, like the real h3.

Each SVM set (Obj and Img for both networks, the three context classifiers) runs with
both solvers, one after the other, with the protocol of params.yaml (costs, folds, seed);
the report gives seconds, mAP or accuracy, the largest per-class AP difference and the
chosen costs of each solver, and the ratio of the total times. ``--workers`` is the
sklearn CV's processes (default: classify.workers) and ``--threads`` the Newton solver's
torch threads (default: classify.threads).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from pipeline.evaluate.classify.svm import train_and_test, train_multiclass
from pipeline.params import load_params

log = logging.getLogger("bench_classify")

NETWORKS = ("original", "scn")  # the stored keys (pipeline.evaluate.compare.NETWORKS)


def real_sets(data: Path, params_path: Path) -> dict[str, dict]:
    """The SVM inputs of a run: cached Obj/Img features and the context experiment's."""
    from pipeline.data.voc import open_split
    from pipeline.evaluate.classify.context import context_features
    from pipeline.seed import seed_everything
    from pipeline.train.model import load_trained

    p = load_params(params_path)
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for net in NETWORKS:
        for setting in ("obj", "img"):
            for role in ("train", "test"):
                where = data / "original" / "classify" if net == "original" else data / "classify"
                with h5py.File(where / f"{net}_{setting}_{role}.h5", "r") as fh:
                    arrays[f"{net}_{setting}_{role}"] = {k: fh[k][()] for k in fh}
    ref = p.dataset_ref
    ref = dataclasses.replace(
        ref, data=dataclasses.replace(p.data, scenes_root=str(data / "scenes"))
    )
    splits = {
        "train": open_split(ref, p.data.eval_train_split),
        "test": open_split(ref, p.data.eval_test_split),
    }
    classes = list(splits["train"].classes)
    sets: dict[str, dict] = {}
    for setting in ("obj", "img"):
        for net in NETWORKS:
            tr, te = arrays[f"{net}_{setting}_train"], arrays[f"{net}_{setting}_test"]
            sets[f"{setting}_{net}"] = {
                "kind": "binary", "classes": classes,
                "train": (tr["features"], tr["labels"]), "test": (te["features"], te["labels"]),
            }  # fmt: skip
    obj = {net: {r: arrays[f"{net}_obj_{r}"] for r in ("train", "test")} for net in NETWORKS}
    trained = load_trained(data / "train" / "model.pt", device=torch.device("cpu"))
    rng = seed_everything(p.classify.seed)
    ctx, _ = context_features(p.classify, p.pairs.offset_scale, splits, obj, trained, rng)
    for name in ("own", "context", "both"):
        sets[name] = {
            "kind": "multiclass",
            "train": (ctx["train"][name], ctx["train"]["y"]),
            "test": (ctx["test"][name], ctx["test"]["y"]),
        }
    return sets


def generated_sets(seed: int = 0, n_obj: int = 2000, dim: int = 1280, n_cls: int = 10) -> dict:
    """Features of the default's shape with class structure (see the module docstring)."""
    rng = np.random.default_rng(seed)
    protos = np.maximum(rng.normal(0, 1, (n_cls, dim)), 0)  # (C, D) class directions
    nuisance = rng.normal(0, 1, (32, dim))  # (32, D) shared low-rank appearance variation
    freq = rng.dirichlet(np.full(n_cls, 3.0))

    def objects(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = rng.choice(n_cls, size=n, p=freq)
        x = 1.0 + 0.12 * protos[y] + rng.normal(0, 1, (n, 32)) @ nuisance * 0.15
        x = np.maximum(x + rng.normal(0, 0.6, (n, dim)), 0).astype(np.float32)  # (n, D)
        labels = -np.ones((n, n_cls), np.int8)
        labels[np.arange(n), y] = np.where(rng.random(n) < 0.03, 0, 1)  # a few difficult
        return x, labels, y

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        present = rng.random((n, n_cls)) < 0.45  # (n, C)
        x = 1.0 + 0.12 * present @ protos + rng.normal(0, 1, (n, 32)) @ nuisance * 0.15
        x = np.maximum(x + rng.normal(0, 0.6, (n, dim)), 0).astype(np.float32)
        return x, np.where(present, 1, -1).astype(np.int8)

    sets: dict[str, dict] = {}
    classes = [f"class{c}" for c in range(n_cls)]
    mix = rng.normal(0, 1, (dim, dim)) / np.sqrt(dim)  # SCN: the same features, rotated
    for net in NETWORKS:
        (xo, lo, _), (xt, lt, _) = objects(n_obj), objects(n_obj)
        (xi, li), (xj, lj) = images(200), images(200)
        if net == "scn":
            xo, xt = np.maximum(xo @ mix, 0), np.maximum(xt @ mix, 0)
        sets[f"obj_{net}"] = {"kind": "binary", "classes": classes,
                              "train": (xo, lo), "test": (xt, lt)}  # fmt: skip
        sets[f"img_{net}"] = {"kind": "binary", "classes": classes,
                              "train": (xi, li), "test": (xj, lj)}  # fmt: skip
    ctx: dict[str, dict] = {}
    rot = rng.normal(0, 1, (dim, dim)) / np.sqrt(dim)  # (D, D) the context module's map
    for role in ("train", "test"):
        own, _, y = objects(n_obj)
        # the bottom patch's class: the top's own class in 60% of pairs (context), else any
        other = np.where(rng.random(n_obj) < 0.6, y, rng.integers(0, n_cls, n_obj))
        hint = protos[other] @ rot  # (n, D)
        h3 = 1 / (1 + np.exp(-(2.0 + 0.1 * hint + 0.02 * rng.normal(0, 1, (n_obj, dim)))))
        norm = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
        ctx[role] = {"own": norm(own), "context": norm(h3), "y": y}
        ctx[role]["both"] = np.concatenate([ctx[role]["own"], ctx[role]["context"]], axis=1)
    for name in ("own", "context", "both"):
        sets[name] = {"kind": "multiclass", "train": (ctx["train"][name], ctx["train"]["y"]),
                      "test": (ctx["test"][name], ctx["test"]["y"])}  # fmt: skip
    return sets


def run_set(s: dict, solver: str, costs, folds: int, seed: int, workers: int, threads: int,
            device) -> dict:  # fmt: skip
    """One SVM set with one solver: seconds and what the stage reports."""
    kw = {"solver": solver, "workers": workers, "threads": threads, "device": device}
    t0 = time.perf_counter()
    if s["kind"] == "binary":
        res = train_and_test(*s["train"], *s["test"], s["classes"], costs, folds, seed, **kw)
        out = {
            "map": res.map,
            "ap": [r.ap for r in res.per_class],
            "costs": [r.cost for r in res.per_class],
            "not_converged": res.convergence_warnings,
        }
    else:
        res = train_multiclass(*s["train"], *s["test"], costs, folds, seed, **kw)
        out = {"accuracy": res.accuracy, "cost": res.cost, "cv_accuracy": res.cv_accuracy}
    out["seconds"] = time.perf_counter() - t0
    return out


def compare(ref: dict, new: dict) -> dict:
    if "map" in ref:
        ap_r, ap_n = np.array(ref["ap"], float), np.array(new["ap"], float)
        return {
            "map_diff": new["map"] - ref["map"],
            "max_abs_ap_diff": float(np.nanmax(np.abs(ap_n - ap_r))),
            "costs_equal": int(
                sum(a == b for a, b in zip(ref["costs"], new["costs"], strict=True))
            ),
            "classes": len(ref["costs"]),
        }
    return {
        "accuracy_diff": new["accuracy"] - ref["accuracy"],
        "cost_equal": ref["cost"] == new["cost"],
        "max_abs_cv_accuracy_diff": float(
            np.max(np.abs(np.subtract(ref["cv_accuracy"], new["cv_accuracy"])))
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="a run's data/ (feature caches, model.pt)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--generated", action="store_true", help="generated features")
    parser.add_argument("--sets", nargs="*", help="run only these sets (default: all)")
    parser.add_argument("--workers", type=int, default=0, help="sklearn CV processes")
    parser.add_argument("--threads", type=int, help="Newton solver torch threads (0: default)")
    parser.add_argument("--device", default="cpu", help="Newton solver device")
    parser.add_argument("--solvers", nargs="+", default=["sklearn", "newton"])
    parser.add_argument("--out", type=Path, help="write the JSON here too")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not args.generated and args.data is None:
        parser.error("give --data DIR (a run's data/) or --generated")
    p = load_params(args.params)
    cfg = p.classify
    workers = args.workers or cfg.workers
    threads = cfg.threads if args.threads is None else args.threads
    sets = generated_sets() if args.generated else real_sets(args.data, args.params)
    names = args.sets or list(sets)
    unknown = sorted(set(names) - set(sets))
    if unknown:
        parser.error(f"--sets: {unknown} unknown; allowed: {', '.join(sets)}")
    result: dict = {
        "source": "generated" if args.generated else str(args.data),
        "costs": list(cfg.costs), "folds": cfg.cv_folds, "seed": cfg.seed,
        "sklearn_workers": workers, "newton_threads": threads, "device": args.device,
        "cpus": os.cpu_count(), "load_average_start": os.getloadavg()[0], "sets": {},
    }  # fmt: skip
    totals = dict.fromkeys(args.solvers, 0.0)
    for name in names:
        s = sets[name]
        shape = {"train": list(np.shape(s["train"][0])), "test": list(np.shape(s["test"][0]))}
        row: dict = {"kind": s["kind"], **shape}
        for solver in args.solvers:
            out = run_set(s, solver, cfg.costs, cfg.cv_folds, cfg.seed, workers, threads,
                          args.device)  # fmt: skip
            row[solver] = out
            totals[solver] += out["seconds"]
            log.warning("%s %s: %.1f s", name, solver, out["seconds"])
        if len(args.solvers) == 2:
            row["newton_vs_sklearn"] = compare(row["sklearn"], row["newton"])
        result["sets"][name] = row
    result["seconds"] = {k: round(v, 2) for k, v in totals.items()}
    if set(totals) == {"sklearn", "newton"}:
        result["newton_over_sklearn"] = round(totals["newton"] / totals["sklearn"], 4)
    result["load_average_end"] = os.getloadavg()[0]
    text = json.dumps(result, indent=2, default=float)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
