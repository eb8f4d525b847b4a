"""RESULTS.md from the runs of :mod:`experiments.results`: the renderer, pure (no I/O).

:func:`render_results` writes the report from the :class:`Run` records and the provenance
context the runner gathered: the experiments, the paper's Table 2 (linear-SVM mAP), the
low-shot table, Table 1 (context classification), Table 4 (detection), Figure 3
(synthetic), the proposals and pairs per mechanism, the facts and the params. The paper's
figures it prints beside ours are here (``PAPER_*``, REFERENCE.md section 3), and so are
the helpers that read nested metrics (:func:`get`) and pool the bootstrap records over
training seeds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.evaluate.bootstrap import (
    lowshot_key,
    percentile_interval,
    pooled_differences,
    pooled_interval,
)

MECHANISMS = ("edgebox", "yolo", "bbox", "random")
# Other training methods, each one experiment with the workspace's proposal: name -> -S
# (issue 24) "control": the null-objective control, the SCN trained on shuffled pairs
# (train.pairs: shuffled) at the SCN's settings; "control-drift" (with --control-drift):
# the same with the settings (the number of epochs, last epoch kept) whose h1 drift matches
# the SCN's (experiments.regimes --controls finds them), the contrast that tells context
# from movement.
BASELINES: dict[str, tuple[str, ...]] = {
    "doersch": ("method=doersch",),
    "control": ("train.pairs=shuffled",),
    # the SCN without the offset input (the paper's Figure 3 ablation, on real pairs): the
    # same same-image pairs with no relative position, so SCN - nooffset is what the offset
    # adds to whatever the pairing alone teaches
    "nooffset": ("train.use_offset=false",),
}
CONTROL_DRIFT = "control-drift"


def baseline_of(name: str) -> tuple[str, str | None] | None:
    """(baseline, proposal) of a baseline run's name, None for an SCN mechanism: a name of
    BASELINES runs with the workspace's proposal (proposal None); ``<baseline>-<mechanism>``
    (``control-bbox``: the shuffled-pairs control on BBox pairs) with that mechanism's."""
    for mech in MECHANISMS:
        base = name.removesuffix(f"-{mech}")
        if base != name and (base in BASELINES or base == CONTROL_DRIFT):
            return base, mech
    if name in BASELINES or name == CONTROL_DRIFT:
        return name, None
    return None


def proposal_of(name: str, own: str) -> str:
    """The proposal a run of this mechanism or baseline trains on: the mechanism's, a
    baseline's own (``control-bbox``), or the workspace's (``own``)."""
    spec = baseline_of(name)
    return name if spec is None else spec[1] or own


def run_name_label(mech: str) -> str:
    """A row's label: the baseline's name, or ``<mechanism> SCN``."""
    return mech if baseline_of(mech) else f"{mech} SCN"


# Column order and labels of the paper's Table 2 (Doersch: not in it, our baseline run).
PAPER_COLUMNS = (("bbox", "BBox"), ("yolo", "YOLO"), ("edgebox", "EdgeBox"), ("random", "Random"),
                 ("doersch", "Doersch"))  # fmt: skip
# The SCN paper's Table 4 row for Doersch et al. (VOC2007 test; classification with the
# whole network fine-tuned, Fast R-CNN detection; REFERENCE.md section 3)
PAPER_DOERSCH = {"classification": 55.3, "detection": 46.6}

# REFERENCE.md section 3 (percent).
PAPER_TABLE2 = {
    "CNN M": {
        "original": (75.3, 68.5),
        "bbox": (78.7, 70.8),
        "yolo": (79.2, 70.7),
        "edgebox": (79.9, 72.8),
        "random": (78.8, 70.0),
    },
    "VGG 19": {
        "original": (81.4, 78.1),
        "bbox": (82.6, 78.8),
        "yolo": (83.0, 79.0),
        "edgebox": (83.6, 79.5),
        "random": (83.2, 79.2),
    },
}
PAPER_TABLE1 = {"own": 78.3, "context": 56.3, "both": 79.5, "same_class_share": 45.0,
                "n_train_pairs": 34378, "n_test_pairs": 34722}  # fmt: skip
PAPER_TABLE4 = {"original": 58.7, "scn_edgebox": 59.4}  # VOC2007 test, CNN M, Fast R-CNN
PAPER_FIG3 = {"offset": "near 0 after about 25 epochs", "no_offset": "about 30"}


@dataclass
class Run:
    """One mechanism's experiment: what ran, and what DVC recorded for it."""

    mechanism: str
    name: str
    status: str = "not run"  # ok | failed | not run
    seconds: float | None = None
    rev: str | None = None  # the experiment's git commit
    params: dict = field(default_factory=dict)  # params.yaml as recorded by DVC
    metrics: dict = field(default_factory=dict)  # stage -> metrics dict
    error: str | None = None
    overrides: list[str] = field(default_factory=list)  # the -S values it was run with
    seed: int | None = None  # train.seed of this run (--seeds)
    # setting (obj, img) -> classify's bootstrap record: value, (B,) diffs, seed, n_boot, n_test
    bootstrap: dict[str, dict] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def get(d: Any, *keys: str) -> Any:
    """``d[k1][k2]...`` or None when any level is missing."""
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def pct(x: float | None) -> str:
    """A fraction as percent with two decimals; n/a when missing."""
    return "n/a" if x is None else f"{100 * x:.2f}"


def diff_pct(a: float | None, b: float | None) -> str:
    """``b - a`` in percentage points, signed."""
    return "n/a" if a is None or b is None else f"{100 * (b - a):+.2f}"


def diff_ci(a: float | None, b: float | None, ci: dict | None) -> str:
    """``b - a`` in points with classify's paired bootstrap 95% interval and verdict, when
    the metrics have one (``map_diff_ci``); a difference whose interval holds 0 reads
    "no measurable difference", never a gain or a loss."""
    text = diff_pct(a, b)
    if not ci or ci.get("ci_low") is None or ci.get("ci_high") is None:
        return text
    return (f"{text} [{100 * ci['ci_low']:+.2f}, {100 * ci['ci_high']:+.2f}]: "
            f"{ci.get('verdict', '?')}")  # fmt: skip


def signed(x: float | None) -> str:
    """A fraction as signed points with two decimals; n/a when missing."""
    return "n/a" if x is None else f"{100 * x:+.2f}"


def num(x: Any, fmt: str = "{:.4g}") -> str:
    return "n/a" if x is None else fmt.format(x)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {'a.b.c': value}; lists stay values."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten(value, name) if isinstance(value, dict) else {name: value})
    return out


def params_diff(base: dict, params: dict) -> dict[str, Any]:
    """Flattened keys whose value in ``params`` differs from ``base`` (None: absent)."""
    a, b = flatten(base), flatten(params)
    return {k: b.get(k) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def params_sha256(params: dict) -> str:
    """SHA-256 of the params as canonical JSON (key-sorted)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def same_values(values: list[Any]) -> bool:
    return all(v == values[0] for v in values[1:])


# --------------------------------------------------------------------------- seeds


def by_mechanism(runs: list[Run]) -> dict[str, list[Run]]:
    """Successful runs per mechanism (or baseline), in first-seen order: one per seed."""
    out: dict[str, list[Run]] = {}
    for r in runs:
        if r.status == "ok":
            out.setdefault(r.mechanism, []).append(r)
    return out


def run_label(r: Run, n_seeds: int) -> str:
    """The mechanism, and the seed when the mechanism ran with several."""
    return r.mechanism if n_seeds == 1 or r.seed is None else f"{r.mechanism} (seed {r.seed})"


def mean_sd(values: list[float | None]) -> str:
    """Percent: the value, or mean ± sample standard deviation over several seeds."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return pct(vals[0])
    return f"{100 * np.mean(vals):.2f} ± {100 * np.std(vals, ddof=1):.2f}"


def mean_of(runs: list[Run], *keys: str) -> float | None:
    """Mean over the runs of the metric at ``keys``; None when a run lacks it."""
    vals = [get(r.metrics, *keys) for r in runs]
    return None if not vals or None in vals else float(np.mean(vals))


def mean_diff(runs: list[Run], *keys: str) -> float | None:
    """Mean over the runs of SCN - original at ``keys`` (e.g. classify, obj)."""
    diffs = []
    for r in runs:
        a, b = get(r.metrics, *keys, "original", "map"), get(r.metrics, *keys, "scn", "map")
        if a is None or b is None:
            return None
        diffs.append(b - a)
    return float(np.mean(diffs)) if diffs else None


def seed_interval(runs: list[Run], setting: str, seed: int = 0) -> dict | None:
    """The 95% interval of the mean SCN - original mAP difference on ``setting`` (obj, img:
    classify's; det: detect's) over the runs' seeds and the test items
    (:func:`pooled_interval`), as the stage's ``map_diff_ci`` dict; one run: its own.
    None when a run lacks the bootstrap distribution or the runs did not share their
    resamples (the stage's seed, number of resamples, test set size)."""
    if len(runs) == 1:
        keys = ("detect",) if setting == "det" else ("classify", setting)
        return get(runs[0].metrics, *keys, "map_diff_ci")
    return pooled_seed_interval(runs, setting, seed)


def pooled_seed_interval(runs: list[Run], setting: str, seed: int = 0) -> dict | None:
    """The interval of the mean difference over the runs' seeds and the resamples of their
    bootstrap records ``setting`` (``bootstrap.npz``: obj, img, det, ``lowshot_<s>_k<k>``),
    as a ``map_diff_ci`` dict; None when a run lacks the record or the runs did not share
    their resamples."""
    recs = [r.bootstrap.get(setting) for r in runs]
    if any(rec is None for rec in recs):
        return None
    if not same_values([tuple(rec[k] for k in ("seed", "n_boot", "n_test")) for rec in recs]):
        return None
    ci = pooled_interval(
        np.array([rec["value"] for rec in recs]), np.stack([rec["diffs"] for rec in recs]), seed
    )
    return ci.to_dict()


def contrast_interval(a: list[Run], b: list[Run], setting: str, seed: int = 0) -> dict | None:
    """The interval of (mean of ``a``'s differences) - (mean of ``b``'s) on ``setting``
    (a bootstrap record of ``bootstrap.npz``: obj, img, det, ``lowshot_<s>_k<k>``): two
    groups of runs on one test set share every test resample, so their differences are
    subtracted resample by resample, each group's seeds resampled on their own
    (:func:`pooled_differences`). E.g. SCN - control, both against the same original.
    None when a run lacks the record or the runs did not share their resamples."""
    recs_a = [r.bootstrap.get(setting) for r in a]
    recs_b = [r.bootstrap.get(setting) for r in b]
    recs = recs_a + recs_b
    if not recs_a or not recs_b or any(rec is None for rec in recs):
        return None
    if not same_values([tuple(rec[k] for k in ("seed", "n_boot", "n_test")) for rec in recs]):
        return None
    value = float(np.mean([r["value"] for r in recs_a]) - np.mean([r["value"] for r in recs_b]))
    da = pooled_differences(np.stack([r["diffs"] for r in recs_a]), seed)
    db = pooled_differences(np.stack([r["diffs"] for r in recs_b]), seed + 1)
    return percentile_interval(value, da - db, len(da)).to_dict()


def diff_text(diff: float | None, ci: dict | None) -> str:
    """A difference in points with its interval and verdict (see :func:`diff_ci`)."""
    if diff is None:
        return "n/a"
    text = f"{100 * diff:+.2f}"
    if not ci or ci.get("ci_low") is None or ci.get("ci_high") is None:
        return text
    return (f"{text} [{100 * ci['ci_low']:+.2f}, {100 * ci['ci_high']:+.2f}]: "
            f"{ci.get('verdict', '?')}")  # fmt: skip


def headroom_share(diff: float | None, ci: dict | None, headroom: float | None) -> str:
    """SCN's difference as a share of the diagnose stage's headroom (ceiling - original),
    with the interval scaled alike (the headroom taken as fixed)."""
    if diff is None or headroom is None or headroom <= 0:
        return "n/a"
    text = f"{100 * diff / headroom:.0f}%"
    if ci and ci.get("ci_low") is not None and ci.get("ci_high") is not None:
        text += f" [{100 * ci['ci_low'] / headroom:.0f}%, {100 * ci['ci_high'] / headroom:.0f}%]"
    return text


def lowshot_interval(runs: list[Run], setting: str, k: int, seed: int = 0) -> dict | None:
    """The 95% interval of the mean low-shot difference at ``k`` on ``setting`` over the
    runs' seeds, the draws and the test items (:func:`pooled_seed_interval` of classify's
    ``lowshot_<setting>_k<k>`` records, already pooled over the draws), as a
    ``map_diff_ci`` dict; one run: its own (``lowshot_diff``)."""
    if len(runs) == 1:
        own = get(runs[0].metrics, "classify", "lowshot_diff", setting, f"k{k}")
        if not own:
            return None
        return {"value": own["diff"], "ci_low": own["lo"], "ci_high": own["hi"],
                "verdict": own["verdict"]}  # fmt: skip
    return pooled_seed_interval(runs, lowshot_key(setting, k), seed)


def lowshot_mean_diff(runs: list[Run], setting: str, ks: list[int]) -> list[float] | None:
    """Per k, the mean over the runs of (trained - original) mean low-shot mAP over the
    draws; None when a run lacks the low-shot results of these k."""
    per = [get(r.metrics, "classify", "lowshot", "settings", setting) for r in runs]
    if not per or any(not q or q.get("k") != ks or "scn" not in q for q in per):
        return None
    return [float(v) for v in np.mean(
        [np.subtract(q["scn"]["map_mean"], q["original"]["map_mean"]) for q in per], axis=0
    )]  # fmt: skip


def lowshot_differences(groups: dict[str, list[Run]]) -> dict[str, dict[str, list]]:
    """Per setting and arm (mechanism or baseline), the pooled low-shot difference from the
    original per k: ``{setting: {arm: [(k, diff, ci_low, ci_high, verdict), ...]}}``
    (fractions; :func:`lowshot_mean_diff` and :func:`lowshot_interval`, as the tables); a k
    without an interval is left out."""
    first = next(iter(groups.values()), [])
    low = get(first[0].metrics, "classify", "lowshot", "settings") if first else None
    out: dict[str, dict[str, list]] = {}
    for setting, res in (low or {}).items():
        ks = (res or {}).get("k") or []
        for arm, g in groups.items():
            diffs = lowshot_mean_diff(g, setting, ks) if ks else None
            for k, d in zip(ks, diffs or [], strict=False):
                ci = lowshot_interval(g, setting, k)
                if ci and ci.get("ci_low") is not None and ci.get("ci_high") is not None:
                    out.setdefault(setting, {}).setdefault(arm, []).append(
                        (k, d, ci["ci_low"], ci["ci_high"], ci.get("verdict", "?"))
                    )
    return out


def plot_lowshot_differences(path: Any, groups: dict[str, list[Run]]) -> bool:
    """The figure of the low-shot differences against k (issue 24, item 2): one panel per
    setting, one line per arm with its 95% interval (pooled over its seeds, the draws and
    the test items), the arms side by side at each k. False (nothing written) when no arm
    has one."""
    data = lowshot_differences(groups)
    if not data:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.io import write_figure

    fig, axes = plt.subplots(1, len(data), figsize=(6.4 * len(data), 4.2), squeeze=False)
    for ax, (setting, arms) in zip(axes[0], data.items(), strict=True):
        ax.axhline(0.0, color="black", lw=0.8)
        for i, (arm, pts) in enumerate(arms.items()):
            k, d, lo, hi = (np.array([p[j] for p in pts], dtype=float) for j in range(4))
            x = k * 2 ** (0.06 * (i - (len(arms) - 1) / 2))  # side by side on the log axis
            n = len(groups[arm])
            ax.errorbar(x, 100 * d, yerr=100 * np.stack([d - lo, hi - d]), marker="o",
                        ms=3.5, capsize=2.5, lw=1.1,
                        label=f"{run_name_label(arm)} ({n} seed{'s' * (n > 1)})")  # fmt: skip
        ks = sorted({p[0] for pts in arms.values() for p in pts})
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("positives per class (k)")
        ax.set_ylabel("mAP difference from the original (points)")
        ax.set_title(f"{setting.capitalize()}: low-shot trained - original, 95% intervals",
                     fontsize=9)  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    write_figure(fig, path, dpi=110)
    return True


def _lowshot_cells(res: dict | None, net: str, ks: list[int]) -> list[str]:
    """``net``'s mean ± std mAP per k of one low-shot result; n/a when its k differ."""
    if not res or res.get("k") != ks or net not in res:
        return ["n/a"] * len(ks)
    return [f"{100 * m:.2f} ± {100 * sd:.2f}"
            for m, sd in zip(res[net]["map_mean"], res[net]["map_std"], strict=True)]  # fmt: skip


def lowshot_section(
    groups: dict[str, list[Run]], diagnose: dict, figure: str | None = None
) -> list[str]:
    """Low-shot mAP per k (VISSL's VOC07 protocol, classify's ``lowshot``): the original
    network, the supervised ceiling (diagnose's, Obj only) and each mechanism's SCN (the
    mean over its seeds of each seed's mean over the samples); then each mechanism's
    (and baseline's) difference from the original per k with its interval
    (:func:`lowshot_interval`) and verdict."""
    first = next(iter(groups.values()), [])
    low = get(first[0].metrics, "classify", "lowshot") if first else None
    if not low or not low.get("settings"):
        return []
    if not any(res.get("k") for res in low["settings"].values()):
        return []
    out = ["", "## Low-shot linear SVMs (mAP against positives per class k)", "",
           f"VISSL's VOC07 low-shot protocol: k positives per class, {low.get('n_samples')} "
           "independent draws per k, the same draws for every network; mean ± standard "
           "deviation over the draws (SCN: means over its seeds). A k above some class's "
           "positives is left out. The ceiling row is the diagnose stage's: its head was "
           "fine-tuned on every train label, and its draws come from diagnose's object set "
           "(`diagnose.max_objects`), so they differ slightly from the other rows'.",
           ""]  # fmt: skip
    for setting, res in low["settings"].items():
        ks = res.get("k") or []
        if not ks:
            continue

        rows = [["original", *_lowshot_cells(res, "original", ks)]]
        if setting == "obj":
            ceiling = get(diagnose, "lowshot", "settings", "obj")
            rows.append(["supervised ceiling (diagnose)", *_lowshot_cells(ceiling, "ceiling", ks)])
        for mech, g in groups.items():
            per = [get(r.metrics, "classify", "lowshot", "settings", setting) for r in g]
            if any(not q or q.get("k") != ks for q in per):
                rows.append([mech, *["n/a"] * len(ks)])
                continue
            means = np.mean([q["scn"]["map_mean"] for q in per], axis=0)
            label = run_name_label(mech)  # a baseline is no SCN
            rows.append([label + (f" ({len(g)} seeds)" if len(g) > 1 else ""),
                         *[f"{100 * m:.2f}" for m in means]])  # fmt: skip
        out += [f"{setting.capitalize()}:", ""]
        out += table(["network", *[f"k={k}" for k in ks]], rows)
        out.append("")
        rows = []
        for mech, g in groups.items():
            diffs = lowshot_mean_diff(g, setting, ks)
            label = run_name_label(mech)
            cells = (["n/a"] * len(ks) if diffs is None else
                     [diff_text(d, lowshot_interval(g, setting, k))
                      for d, k in zip(diffs, ks, strict=True)])  # fmt: skip
            rows.append([label + (f" ({len(g)} seeds)" if len(g) > 1 else ""), *cells])
        out += [f"{setting.capitalize()}, trained - original (points) with the paired "
                "bootstrap 95% interval over the test items and the draws (and the seeds):",
                ""]  # fmt: skip
        out += table(["network", *[f"k={k}" for k in ks]], rows)
        out.append("")
    if figure:
        out += [f"![low-shot differences against k]({figure})", "",
                f"`{figure}`: the same differences against k, every arm with its interval.",
                ""]  # fmt: skip
    return out


# --------------------------------------------------------------------------- rendering


def _original(ok: list[Run], *keys: str) -> tuple[str, list[float]]:
    """The original network's value across experiments (identical when all is well)."""
    vals = [v for v in (get(r.metrics, *keys) for r in ok) if v is not None]
    if not vals:
        return "n/a", vals
    if max(vals) == min(vals):
        return pct(vals[0]), vals
    return f"{pct(min(vals))}–{pct(max(vals))}", vals


def _header(context: dict, params: dict) -> list[str]:
    """The title and the line saying when, how and on what the report was generated."""
    backbone = params.get("backbone", "?")
    dataset = params.get("dataset", "?")
    described = f"`{dataset}`"
    if dataset == "scenes":  # which rules generated them (docs/scenes.md)
        scenes = params.get("scenes", {})
        described = f"`scenes` (generator version {scenes.get('version', 1)}, docs/scenes.md)"
    return [
        "# Results: SCN across proposal mechanisms",
        "",
        f"Generated {context.get('generated', '?')} by `{context.get('command', '?')}` "
        f"(DVC {context.get('dvc_version', '?')}), backbone `{backbone}`, dataset "
        f"{described}. Paper numbers: VOC, REFERENCE.md section 3. Our numbers are "
        "percent with two decimals; differences are SCN minus original, in points.",
        "",
    ]


def _experiments_section(runs: list[Run], context: dict) -> list[str]:
    """The commit, one row per experiment (its params' differences) and each failure's log."""
    base = context.get("base_params", {})
    out = [
        "## Experiments",
        "",
        f"Git commit `{context.get('commit', '?')}`"
        + (
            "; the working tree differed from it in: "
            + ", ".join(f"`{p}`" for p in context["dirty"])
            + " (DVC experiments include these changes)."
            if context.get("dirty")
            else "; clean working tree."
        ),
        "",
    ]
    rows = []
    for r in runs:
        diff = params_diff(base, r.params) if r.params else {}
        over = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in diff.items()) or "none"
        if not r.params and r.overrides:
            over = "requested: " + ", ".join(f"`{o}`" for o in r.overrides)
        rows.append([
            r.mechanism,
            num(r.seed, "{}"),
            f"`{r.name}`",
            r.status,
            f"`{r.rev[:12]}`" if r.rev else "—",
            num(r.seconds, "{:.0f}"),
            f"`{params_sha256(r.params)[:16]}`" if r.params else "—",
            over,
        ])  # fmt: skip
    out += table(
        ["mechanism", "train.seed", "experiment", "status", "commit", "seconds",
         "params SHA-256", "params that differ from the commit's params.yaml"],
        rows,
    )  # fmt: skip
    for r in runs:
        if r.status == "failed":
            out += ["", f"`{r.name}` failed:", "", "```", (r.error or "").strip(), "```"]
    return out


def _table2_svm(
    runs: list[Run], ok: list[Run], groups: dict[str, list[Run]], params: dict
) -> list[str]:
    """Table 2 in the paper's form (paper rows, then ours) and the note on Doersch."""
    backbone = params.get("backbone", "?")
    dataset = params.get("dataset", "?")
    out = [
        "",
        "## Table 2: linear-SVM mAP on h1, Obj / Img",
        "",
        "Obj: cropped ground-truth objects; Img: whole images, multi-label. The original "
        "network is the same for every mechanism.",
        "",
    ]
    orig_obj, _ = _original(ok, "classify", "obj", "original", "map")
    orig_img, _ = _original(ok, "classify", "img", "original", "map")
    header = ["net", "Original"] + [label for _, label in PAPER_COLUMNS]
    rows = []
    for net, vals in PAPER_TABLE2.items():
        rows.append([f"{net} (paper, VOC2012), Obj / Img"]
                    + [f"{vals[k][0]:.1f} / {vals[k][1]:.1f}" if k in vals else "—"
                       for k in ("original", *(m for m, _ in PAPER_COLUMNS))])  # fmt: skip
    ours = [f"{backbone} (ours, {dataset}), Obj / Img", f"{orig_obj} / {orig_img}"]
    for mech, _ in PAPER_COLUMNS:
        g = groups.get(mech)
        if g is None:
            ours.append(next((x.status for x in runs if x.mechanism == mech), "not run"))
        else:
            ours.append(f"{pct(mean_of(g, 'classify', 'obj', 'scn', 'map'))} / "
                        f"{pct(mean_of(g, 'classify', 'img', 'scn', 'map'))}")  # fmt: skip
    out += table(header, [*rows, ours])
    out += [
        "",
        "Doersch: Doersch et al.'s relative-position task (`method: doersch`) trained from "
        "the same initial network on the same images, evaluated by the same stages. The "
        f"SCN paper's Table 4 gives it {PAPER_DOERSCH['classification']:.1f} classification"
        f" / {PAPER_DOERSCH['detection']:.1f} detection mAP on VOC2007 (whole network "
        "fine-tuned, not this linear-SVM protocol).",
        "",
    ]
    return out


def _table2_per_mechanism(
    groups: dict[str, list[Run]], n_seeds: dict[str, int], diag: list[dict]
) -> list[str]:
    """Table 2 per mechanism: the supervised ceiling, then each mechanism's Obj and Img
    figures with their differences, intervals and share of the headroom."""
    seeds_note = (
        "SCN: the mean over the training seeds (`train.seed`) of each mechanism's runs."
        if any(n > 1 for n in n_seeds.values())
        else "SCN: one training seed per mechanism."
    )
    ceiling = get(diag[0], "ceiling", "map") if diag else None
    diag_original = get(diag[0], "original", "map") if diag else None
    headroom = _headroom(diag)
    out = [
        seeds_note,
        "",
        "Per mechanism: SCN as mean ± standard deviation over its seeds; the difference SCN - "
        "original with its paired bootstrap 95% interval over the test objects (Obj) or "
        "images (Img) and, with several seeds, over the seeds too (classify's resamples, "
        "shared by every seed's run, each averaged over a resample of the seeds); an "
        'interval that holds 0 reads "no measurable difference". Supervised ceiling: the '
        "diagnose stage's same trainable head (`network.scope`) fine-tuned on the train "
        "objects' labels, then the same Obj protocol (its own original-network figure "
        "beside it, on diagnose's object set); headroom share: SCN's Obj difference over "
        "that headroom (ceiling - original).",
        "",
    ]
    rows = [[
        "supervised ceiling (diagnose)", "—", pct(diag_original), pct(ceiling),
        diff_pct(diag_original, ceiling) + " (headroom)", "—", "—", "—", "—",
        f"{num(get(diag[0], 'n_objects', 'train'), '{}')} / "
        f"{num(get(diag[0], 'n_objects', 'test'), '{}')}" if diag else "—", "—",
    ]]  # fmt: skip
    if len(diag) > 1 and not same_values([get(d, "ceiling", "map") for d in diag]):
        rows[0][0] += " (differs between experiments: first shown)"
    for mech, g in groups.items():
        c = g[0].metrics.get("classify", {})
        obj_diff, img_diff = mean_diff(g, "classify", "obj"), mean_diff(g, "classify", "img")
        obj_ci, img_ci = seed_interval(g, "obj"), seed_interval(g, "img")
        rows.append([
            mech, str(len(g)),
            pct(get(c, "obj", "original", "map")),
            mean_sd([get(r.metrics, "classify", "obj", "scn", "map") for r in g]),
            diff_text(obj_diff, obj_ci), headroom_share(obj_diff, obj_ci, headroom),
            pct(get(c, "img", "original", "map")),
            mean_sd([get(r.metrics, "classify", "img", "scn", "map") for r in g]),
            diff_text(img_diff, img_ci),
            f"{num(get(c, 'obj', 'n_train'), '{}')} / {num(get(c, 'obj', 'n_test'), '{}')}",
            f"{num(get(c, 'img', 'n_train'), '{}')} / {num(get(c, 'img', 'n_test'), '{}')}",
        ])  # fmt: skip
    out += table(
        ["mechanism", "seeds", "Obj original", "Obj SCN", "Obj diff [95% CI]",
         "share of the Obj headroom", "Img original", "Img SCN", "Img diff [95% CI]",
         "Obj train / test", "Img train / test"],
        rows,
    )  # fmt: skip
    return out


def _per_seed_table(groups: dict[str, list[Run]], n_seeds: dict[str, int]) -> list[str]:
    """Each run's own figures and intervals, when some mechanism ran with several seeds."""
    if not any(n > 1 for n in n_seeds.values()):
        return []
    out = ["", "### Per seed", ""]
    rows = []
    for mech, g in groups.items():
        for r in g:
            c, d = r.metrics.get("classify", {}), r.metrics.get("detect", {})
            rows.append([
                mech, num(r.seed, "{}"),
                pct(get(c, "obj", "scn", "map")),
                diff_ci(get(c, "obj", "original", "map"), get(c, "obj", "scn", "map"),
                        get(c, "obj", "map_diff_ci")),
                pct(get(c, "img", "scn", "map")),
                diff_ci(get(c, "img", "original", "map"), get(c, "img", "scn", "map"),
                        get(c, "img", "map_diff_ci")),
                pct(get(d, "scn", "map")),
                diff_ci(get(d, "original", "map"), get(d, "scn", "map"),
                        get(d, "map_diff_ci")),
            ])  # fmt: skip
    out += table(
        ["mechanism", "train.seed", "Obj SCN", "Obj diff [95% CI]", "Img SCN",
         "Img diff [95% CI]", "detection SCN (area)", "detection diff [95% CI]"],
        rows,
    )  # fmt: skip
    return out


def _table1_context(ok: list[Run], n_seeds: dict[str, int]) -> list[str]:
    """Table 1: contextual classification accuracy per run, beside the paper's."""
    out = [
        "",
        "## Table 1: contextual classification (pairs of ground-truth objects)",
        "",
        "Accuracy of a linear SVM predicting the top object's class from: its own "
        "features (original network), h3 predicted from the other patch and the offset "
        "(SCN), both concatenated.",
        "",
    ]
    p1 = PAPER_TABLE1
    rows = [[
        "paper (VGG 19, VOC2012-Pairs)", f"{p1['own']:.1f}", f"{p1['context']:.1f}",
        f"{p1['both']:.1f}", "—", f"{p1['same_class_share']:.0f}", "—",
        f"{p1['n_train_pairs']} / {p1['n_test_pairs']}",
    ]]  # fmt: skip
    for r in ok:
        c = get(r.metrics, "classify", "context") or {}
        if "skipped" in c:  # a method without a context module (doersch)
            continue
        rows.append([
            run_label(r, n_seeds[r.mechanism]),
            pct(get(c, "own", "accuracy")), pct(get(c, "context", "accuracy")),
            pct(get(c, "both", "accuracy")), pct(c.get("majority_baseline")),
            pct(c.get("same_class_share_train")), pct(c.get("same_class_share_test")),
            f"{num(c.get('n_train_pairs'), '{}')} / {num(c.get('n_test_pairs'), '{}')}",
        ])  # fmt: skip
    out += table(
        ["run", "own", "h3 from the other patch", "both", "majority class",
         "same-class pairs, train", "same-class pairs, test", "pairs train / test"],
        rows,
    )  # fmt: skip
    return out


def _detection_table(groups: dict[str, list[Run]]) -> list[str]:
    """Table 4: detection mAP (area and 11-point) per mechanism, beside the paper's."""
    out = [
        "",
        "## Table 4: detection mAP (Fast R-CNN), original vs SCN",
        "",
        "Area: the area under the interpolated precision-recall curve; 11-point: the "
        "VOC2007 protocol. SCN: mean ± standard deviation over the seeds; the area mAP "
        "difference with its paired bootstrap 95% interval over the test images (and the "
        "seeds; with `detect.seeds` > 1 also over the detector seeds, the figures then "
        "being means over the detectors).",
        "",
    ]
    rows = [[
        "paper (CNN M, VOC2007 test; SCN = EdgeBox)", "—", "—", "—",
        f"{PAPER_TABLE4['original']:.1f}", f"{PAPER_TABLE4['scn_edgebox']:.1f}",
        f"{PAPER_TABLE4['scn_edgebox'] - PAPER_TABLE4['original']:+.1f}", "—",
    ]]  # fmt: skip
    for mech, g in groups.items():
        d = g[0].metrics.get("detect", {})
        d11 = [get(r.metrics, "detect", "scn", "map_11point") for r in g]
        o11 = get(d, "original", "map_11point")
        rows.append([
            mech,
            pct(get(d, "original", "map")),
            mean_sd([get(r.metrics, "detect", "scn", "map") for r in g]),
            diff_text(mean_diff(g, "detect"), seed_interval(g, "det")),
            pct(o11), mean_sd(d11),
            "n/a" if o11 is None or None in d11 else f"{100 * (np.mean(d11) - o11):+.2f}",
            f"{num(get(d, 'original', 'loss_first'), '{:.2f}')} / "
            + " ".join(num(get(r.metrics, "detect", "scn", "loss_first"), "{:.2f}") for r in g),
        ])  # fmt: skip
    out += table(
        ["run", "original (area)", "SCN (area)", "diff (area) [95% CI]", "original (11-point)",
         "SCN (11-point)", "diff (11-point)",
         "training loss, first 10% of iterations, original / SCN"],
        rows,
    )  # fmt: skip
    return out


def _figure3_synthetic(ok: list[Run]) -> list[str]:
    """Figure 3: the synthetic stage's test MSE, one row when every experiment agrees."""
    out = [
        "",
        "## Figure 3: synthetic pairs, final test MSE per pair",
        "",
        "The synthetic stage does not depend on the proposal mechanism.",
        "",
    ]
    keys = ("epochs", "test_mse_offset", "test_mse_no_offset", "test_mse_ratio",
            "test_mse_mean_predictor", "n_train", "n_test")  # fmt: skip
    syn = [(r, r.metrics.get("synthetic", {})) for r in ok]
    if syn and same_values([tuple(s.get(k) for k in keys) for _, s in syn]):
        syn = [(None, syn[0][1])]
        out += [f"Identical in all {len(ok)} experiments.", ""]
    rows = [[
        "paper (CNN M)", "about 25+", PAPER_FIG3["offset"], PAPER_FIG3["no_offset"],
        "near 0", "—", "600 / 200",
    ]]  # fmt: skip
    for r, s in syn:
        rows.append([
            "ours" if r is None else r.mechanism, num(s.get("epochs"), "{}"),
            num(s.get("test_mse_offset")), num(s.get("test_mse_no_offset")),
            num(s.get("test_mse_ratio"), "{:.3f}"), num(s.get("test_mse_mean_predictor")),
            f"{num(s.get('n_train'), '{}')} / {num(s.get('n_test'), '{}')}",
        ])  # fmt: skip
    out += table(
        ["run", "epochs", "with offset", "without offset", "ratio with / without",
         "mean predictor", "pairs train / test"],
        rows,
    )  # fmt: skip
    return out


def _proposals_table(ok: list[Run], n_seeds: dict[str, int]) -> list[str]:
    """Proposals, pairs and SCN training per run, with the note on h1 drift and the ridge."""
    out = ["", "## Proposals, pairs and SCN training per mechanism", ""]
    rows = []
    for r in ok:
        pr, pa, tr = (r.metrics.get(s, {}) for s in ("proposals", "pairs", "train"))
        split = get(pa, "scn", "split") or get(r.params, "data", "scn_split") or "train"
        gain = tr.get("finetune_gain_nonoverlap")
        rows.append([
            run_label(r, n_seeds[r.mechanism]),
            split,
            f"{num(get(pr, 'splits', split, 'boxes_per_image'))} / "
            f"{num(get(pr, 'splits', 'test', 'boxes_per_image'))}",
            f"{pct(get(pr, 'splits', split, 'recall_iou0.5'))} / "
            f"{pct(get(pr, 'splits', 'test', 'recall_iou0.5'))}",
            f"{pct(get(pr, 'splits', split, 'recall_iou0.7'))} / "
            f"{pct(get(pr, 'splits', 'test', 'recall_iou0.7'))}",
            f"{num(get(pa, 'splits', split, 'patches'), '{}')} / "
            f"{num(get(pa, 'splits', 'test', 'patches'), '{}')}",
            f"{num(get(pa, 'splits', split, 'pairs'), '{}')} / "
            f"{num(get(pa, 'splits', 'test', 'pairs'), '{}')}",
            num(tr.get("test_loss")), num(tr.get("test_explained"), "{:.4f}"),
            f"{pct(tr.get('frozen_test_explained_nonoverlap'))} / "
            f"{pct(tr.get('test_explained_nonoverlap'))}",
            "n/a" if gain is None else f"{100 * gain:+.2f}",
            num(get(r.metrics, "diagnose", "targets", "ridge_h1_offset"), "{:.4f}"),
            num(tr.get("h1_drift"), "{:.2f}"), num(tr.get("h1_norm_ratio"), "{:.2f}"),
        ])  # fmt: skip
    out += table(
        ["mechanism", "SCN split", "boxes per image SCN / test", "recall@0.5 SCN / test",
         "recall@0.7 SCN / test", "patches SCN / test", "pairs SCN / test",
         "SCN test loss", "SCN test explained variance",
         "non-overlapping held-out explained, % frozen / SCN",
         "fine-tuning gain (points)",
         "no-training ridge [h1, o] explained (diagnose)", "h1 drift", "h1 norm ratio"],
        rows,
    )  # fmt: skip
    out += [
        "",
        "h1 drift: ||h1 - h1_0|| / ||h1_0|| over the held-out bottom patches, h1_0 being the "
        "original network's representation (`metrics/details/train.json`); h1 norm ratio: "
        "||h1|| / ||h1_0||. The ridge column: the share of the same kind of held-out target "
        "variance that a ridge map from the frozen original [h1_j, o_ij] explains without any "
        "training (`metrics/details/diagnose.json`, `targets.ridge_h1_offset`): the baseline SCN's "
        "training has to beat. Frozen / SCN: the held-out explained share on the pairs whose "
        "patches do not overlap, of a context module trained on the frozen original h1 and of "
        "the selected SCN; the fine-tuning gain is their difference (train's "
        "`finetune_gain_nonoverlap`, both selected on the held-out pairs). SCN split: the "
        "split the SCN trained on (`data.scn_split`); n/a where a method records no such "
        "figure (Doersch).",
    ]
    return out


@dataclass(frozen=True)
class Contrast:
    """A section that sets the SCN against a baseline trained on the same pairs."""

    title: str
    intro: str  # what the baseline is ({own}: the workspace's proposal)
    word: str  # the baseline in the figures' text and columns ("SCN - control")
    label: str  # ... and in the verdicts ("SCN above the control")


#: the baselines with a section of their own; the drift-matched control shares the control's
CONTRASTS: dict[str, Contrast] = {
    "control": Contrast(
        "SCN against the shuffled-pairs control",
        "The control trains the same network with the same regime on pairs whose bottom "
        "patch comes from another image (`train.pairs: shuffled`): it moves h1 with no "
        "context to learn. `control` runs at the SCN's settings, `control-drift` with the "
        "settings whose h1 drift matches the SCN's (its params column says which), each on "
        "the workspace's proposal ({own}); `control-<mechanism>` on that mechanism's pairs, "
        "against that mechanism's SCN.",
        "control",
        "the control",
    ),
    "nooffset": Contrast(
        "SCN against the SCN without the offset",
        "The no-offset ablation trains the same network with the same regime on the same "
        "real pairs, but its context module does not see the relative position of the two "
        "patches (`train.use_offset: false`, the paper's Figure 3 ablation on real pairs): "
        "whatever it learns comes from the pairing alone (which objects share an image), so "
        "SCN - nooffset is what the spatial offset adds. `nooffset` runs on the workspace's "
        "proposal ({own}), `nooffset-<mechanism>` on that mechanism's pairs.",
        "no-offset",
        "the no-offset SCN",
    ),
}


def _contrast_kind(base: str) -> str | None:
    """The CONTRASTS section a baseline belongs to (None: none, e.g. Doersch)."""
    base = "control" if base == CONTROL_DRIFT else base
    return base if base in CONTRASTS else None


def _contrast_sections(groups: dict[str, list[Run]], params: dict) -> list[str]:
    """One section per CONTRASTS kind with runs: SCN against the shuffled-pairs controls
    (issue 24) and against its no-offset ablation, setting by setting: each baseline's
    difference from the original and SCN - baseline with its interval (same test
    resamples), beside the h1 drift and the fine-tuning gain that say how far and how
    usefully each moved the bottom stream."""
    own = params.get("proposal", "edgebox")
    found: dict[str, list] = {kind: [] for kind in CONTRASTS}
    for name, runs in groups.items():  # (name, its baseline, its proposal, runs, SCN runs)
        base, mech = (baseline_of(name) or ("", None))[0], proposal_of(name, own)
        kind = _contrast_kind(base)
        if kind and groups.get(mech):
            found[kind].append((name, base, mech, runs, groups[mech]))
    out = []
    for kind, arms in found.items():
        if arms:
            out += _contrast_section(kind, arms, own)
    return out


def _contrast_section(kind: str, arms: list, own: str) -> list[str]:
    """CONTRASTS[kind]'s section: per arm (name, baseline, proposal, its runs, the SCN runs
    on that proposal) the drift and fine-tuning gain line and the table of settings."""
    c = CONTRASTS[kind]
    word = c.word
    ks = get(arms[0][4][0].metrics, "classify", "lowshot", "settings", "obj", "k") or []
    settings = [("obj", "Obj mAP"), ("img", "Img mAP"), ("det", "detection mAP")] + [
        (lowshot_key("obj", k), f"low-shot Obj mAP, k = {k}") for k in ks
    ]
    verdicts = {"gain": f"SCN above {c.label}", "loss": f"SCN below {c.label}",
                "no measurable difference": "no measurable difference"}  # fmt: skip

    def mean_value(g: list[Run], setting: str) -> str:
        vals = [r.bootstrap.get(setting, {}).get("value") for r in g]
        return "n/a" if None in vals else f"{100 * float(np.mean(vals)):+.2f}"

    out = ["", f"## {c.title}", "", c.intro.format(own=own) + " Differences in points; SCN - "
           f"{word} with its paired bootstrap 95% interval over the test items (and seeds), "
           "both measured against the same original on the same resamples.", ""]  # fmt: skip
    for name, base, mech, other, scn in arms:
        drift_s, drift_c = mean_of(scn, "train", "h1_drift"), mean_of(other, "train", "h1_drift")
        gain_s = mean_of(scn, "train", "finetune_gain_nonoverlap")
        gain_c = mean_of(other, "train", "finetune_gain_nonoverlap")
        out += [f"`{name}` against {mech} SCN ({len(other)} seed(s); SCN: {len(scn)}): h1 "
                f"drift SCN {num(drift_s, '{:.3f}')}, {word} {num(drift_c, '{:.3f}')}; "
                f"fine-tuning gain on non-overlapping held-out pairs SCN {signed(gain_s)}, "
                f"{word} {signed(gain_c)} points."]  # fmt: skip
        sel_s = mean_of(scn, "train", "selected_epoch")
        sel_c = mean_of(other, "train", "selected_epoch")
        if sel_s is not None and sel_c is not None:
            out[-1] += f" Selected epoch (mean): SCN {sel_s:.3g}, {word} {sel_c:.3g}."
            if base == "control":
                out[-1] += (" Under `train.select: best` the control's selected epoch sets "
                            "its drift more than `train.lr` does, so match it with "
                            "`--control-drift [mechanism:]train.select=last,"
                            "train.early_stop_patience=0,train.epochs=E`.")  # fmt: skip
        out.append("")
        rows = []
        for setting, row_label in settings:
            ci = contrast_interval(scn, other, setting)
            cell = "n/a" if ci is None else (
                f"{100 * ci['value']:+.2f} [{100 * ci['ci_low']:+.2f}, "
                f"{100 * ci['ci_high']:+.2f}]: {verdicts[ci['verdict']]}"
            )  # fmt: skip
            rows.append([row_label, mean_value(scn, setting), mean_value(other, setting), cell])
        out += table(["measure", "SCN - original", f"{name} - original", f"SCN - {word}"], rows)
        out.append("")
    return out


def _facts(
    runs: list[Run], ok: list[Run], groups: dict[str, list[Run]], headroom: float | None
) -> list[str]:
    """SCN vs the original as measured: each difference with its verdict, the ridge
    comparison, originals that differ between experiments and the runs without results."""
    _, obj_vals = _original(ok, "classify", "obj", "original", "map")
    _, img_vals = _original(ok, "classify", "img", "original", "map")
    out = ["", "## SCN vs the original, as measured", ""]
    for mech, g in groups.items():
        seeds = f" over {len(g)} seeds" if len(g) > 1 else ""
        for setting, what in (("obj", "Obj"), ("img", "Img")):
            diff, ci = mean_diff(g, "classify", setting), seed_interval(g, setting)
            if diff is None:
                out.append(f"- {what}, {mech}: not available.")
            elif ci and ci.get("ci_low") is not None:
                share = (f"; {headroom_share(diff, ci, headroom)} of the headroom"
                         if setting == "obj" and headroom else "")  # fmt: skip
                out.append(f"- {mech}, {what}{seeds}: SCN - original "
                           f"{diff_text(diff, ci)}{share}.")  # fmt: skip
            else:
                out.append(f"- {mech}, {what}{seeds}: SCN - original {100 * diff:+.2f} points, "
                           "no interval available, so no verdict.")  # fmt: skip
        explained = mean_of(g, "train", "test_explained")
        ridge = get(g[0].metrics, "diagnose", "targets", "ridge_h1_offset")
        if explained is not None and ridge is not None:
            verdict = "beats" if explained > ridge else "does not beat"
            out.append(f"- {mech}{seeds}: SCN's held-out explained share "
                       f"{100 * explained:.2f}% {verdict} the no-training ridge baseline's "
                       f"{100 * ridge:.2f}%.")  # fmt: skip
        det, det_ci = mean_diff(g, "detect"), seed_interval(g, "det")
        if det is None:
            out.append(f"- {mech}, detection (area mAP){seeds}: not available.")
        elif det_ci and det_ci.get("ci_low") is not None:
            out.append(f"- {mech}, detection (area mAP){seeds}: SCN - original "
                       f"{diff_text(det, det_ci)}.")  # fmt: skip
        else:
            out.append(
                f"- {mech}, detection (area mAP){seeds}: SCN - original "
                f"{100 * det:+.2f} points, no interval available, so no verdict."
            )
    for what, vals in (("Obj", obj_vals), ("Img", img_vals)):
        if len(vals) > 1 and max(vals) != min(vals):
            out.append(
                f"- The original network's {what} mAP differs between experiments "
                f"({pct(min(vals))} to {pct(max(vals))}); it should be identical."
            )
    not_ok = [f"`{r.name}` ({r.status})" for r in runs if r.status != "ok"]
    if not_ok:
        out.append(f"- No results for: {', '.join(not_ok)}.")
    return out


def _analysis() -> list[str]:
    """The placeholder for the analysis written by hand."""
    return [
        "",
        "## Analysis",
        "",
        "<!-- ANALYSIS: to be written by hand after reading the numbers above "
        "(why SCN does or does not beat the original here). -->",
    ]


def _params_section(context: dict) -> list[str]:
    """The commit's params.yaml, with its SHA-256, folded."""
    return [
        "",
        "## Params",
        "",
        f"The commit's params.yaml (SHA-256 of the file "
        f"`{context.get('base_params_sha256', '?')}`); each experiment ran with it plus the "
        "differences listed under Experiments.",
        "",
        "<details><summary>params.yaml</summary>",
        "",
        "```yaml",
        context.get("base_params_text", "").rstrip(),
        "```",
        "",
        "</details>",
        "",
    ]


def _headroom(diag: list[dict]) -> float | None:
    """The diagnose stage's headroom (ceiling - original mAP) of the first experiment."""
    return get(diag[0], "headroom", "map") if diag else None


def render_results(runs: list[Run], context: dict) -> str:
    """RESULTS.md from the runs and the provenance ``context``; pure (no I/O).

    ``context``: ``commit``, ``dirty`` (list of paths), ``generated`` (ISO time),
    ``command``, ``dvc_version``, ``base_params`` (the commit's params.yaml as a dict),
    ``base_params_text`` and ``base_params_sha256`` (of its bytes); ``lowshot_figure``:
    the file name of :func:`plot_lowshot_differences`'s figure, when written.
    """
    ok = [r for r in runs if r.status == "ok"]
    groups = by_mechanism(runs)
    n_seeds = {m: len(g) for m, g in groups.items()}
    params = ok[0].params if ok else context.get("base_params", {})
    diag = [r.metrics.get("diagnose") or {} for r in ok]
    out = _header(context, params)
    out += _experiments_section(runs, context)
    out += _table2_svm(runs, ok, groups, params)
    out += _table2_per_mechanism(groups, n_seeds, diag)
    out += _per_seed_table(groups, n_seeds)
    out += lowshot_section(groups, diag[0] if diag else {}, context.get("lowshot_figure"))
    out += _table1_context(ok, n_seeds)
    out += _detection_table(groups)
    out += _figure3_synthetic(ok)
    out += _proposals_table(ok, n_seeds)
    out += _contrast_sections(groups, params)
    out += _facts(runs, ok, groups, _headroom(diag))
    out += _analysis()
    out += _params_section(context)
    return "\n".join(out)


# --------------------------------------------------------------------------- DVC
