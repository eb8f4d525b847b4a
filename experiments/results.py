"""The results table: one DVC experiment per proposal mechanism, written to RESULTS.md.

    .venv/bin/python -m experiments.results                    # four mechanisms + Doersch
    .venv/bin/python -m experiments.results --proposals bbox,random --set train.epochs=1

For each mechanism it runs ``dvc exp run -S proposal=<m> --name results-<m> [-S ...]``,
and for each baseline (``--baselines``, default doersch, control and control-bbox:
``-S method=doersch`` or ``-S train.pairs=shuffled`` with the workspace's proposal, or with
``<m>``'s for ``<baseline>-<m>``) ``--name results-<baseline>``, in the repository's
workspace, one after the other, the runs of one proposal together (stages whose inputs
did not change are skipped; a change of proposal reruns the stages before train, which
DVC's run cache does not hold: :func:`run_order`); each of them with ``--seeds`` SCN training
seeds (default 3: the workspace's ``train.seed`` under the plain name, then
``-S train.seed=<s>`` as ``results-<m>-seed<s>``, which reruns only train and the SCN side
of the evaluation; ``--reuse`` keeps those already made, ``--no-run`` runs none and
reports the missing ones as not run). It then reads every experiment's params and
metrics back with ``dvc exp show --json`` and writes RESULTS.md: the paper's Table 2
(linear-SVM mAP, original vs SCN, Obj and Img: per mechanism the mean and standard
deviation over seeds, the difference with a paired bootstrap 95% interval over the test
items and the seeds, read from each run's ``<paths.classify>/bootstrap.npz``, and the share
of the diagnose stage's headroom (supervised ceiling - original) it is), Table 1 (context
classification),
the low-shot mAP per k and its SCN - original difference per k (pooled over the seeds, the
low-shot draws and the test items, from the same ``bootstrap.npz``),
Table 4 (detection mAP), the synthetic Figure 3 figures, each beside the paper's VOC
number (REFERENCE.md section 3), the proposals' recall and pair counts, and the exact
provenance: the git commit, the files that differed from it, each experiment's commit
and the params it ran with (the ones that differ from the commit's params.yaml, a
SHA-256 of all of them, and the commit's params.yaml in full).

DVC 3 runs workspace experiments in place: after ``dvc exp run`` the workspace holds the
experiment's params.yaml, dvc.lock, data and metrics. The script runs the workspace's
own ``proposal`` last, and at the end writes params.yaml back byte for byte (DVC
rewrites it, e.g. ``null`` as an empty value), so without ``--set`` the workspace ends
as it started. An experiment of the same name on the same commit is removed before its
rerun starts (so a failed rerun leaves none). The
numbers are reported as they come out; the "Analysis" section is left for a person.

This module runs the experiments and collects what DVC recorded (git and DVC through
:class:`tools.dvc_repo.Repo`); :mod:`experiments.results_report` renders RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from experiments.results_report import (
    BASELINES,
    CONTROL_DRIFT,
    MECHANISMS,
    Run,
    baseline_of,
    by_mechanism,
    get,
    plot_lowshot_differences,
    proposal_of,
    render_results,
)
from pipeline.artifacts import DETAILS
from pipeline.evaluate.bootstrap import (
    DISTRIBUTIONS_FILE,
    read_distributions,
)
from pipeline.io import atomic_path
from tools.dvc_repo import Repo
from tools.overrides import holds as matches  # params hold every -S key=value (as DVC reads)

ROOT = Path(__file__).resolve().parent.parent
# --control-drift / --control-lr: the drift-matched control's own -S per proposal (None:
# the workspace's), e.g. ["train.lr=8.9e-06"] or ["train.select=last", "train.epochs=2"]
CONTROL_SETS: dict[str | None, list[str]] = {}
#: keys a drift-matched control may not set (what makes it the control of its proposal)
CONTROL_FIXED = ("proposal", "method", "train.pairs", "train.seed")
# the baselines `make results` runs: Doersch, the shuffled-pairs control on the workspace's
# proposal and on BBox pairs (BBox's SCN gains while its context objective ends below the
# frozen features': RESULTS.md of 2026-12-07), and BBox's SCN without the offset input (does
# that gain need the relative position, or only the pairing?)
DEFAULT_BASELINES = ("doersch", "control", "control-bbox", "nooffset-bbox")
log = logging.getLogger("experiments.results")


def exp_show(repo: Repo) -> dict[str, dict]:
    """Experiments of the current commit by name: {name: {rev, params, metrics}}."""
    data = json.loads(repo.dvc("exp", "show", "--json").stdout)
    head = repo.git("rev-parse", "HEAD").stdout.strip()
    found: dict[str, dict] = {}
    for entry in data:
        if entry.get("rev") != head:
            continue
        for exp in entry.get("experiments") or []:
            for rev in exp.get("revs") or []:
                d = rev.get("data") or {}
                params = get(d, "params", "params.yaml", "data") or {}
                metrics = {
                    Path(path).stem: m["data"]
                    for path, m in (d.get("metrics") or {}).items()
                    if isinstance(m, dict) and isinstance(m.get("data"), dict)
                }
                found[rev.get("name") or exp.get("name")] = {
                    "rev": rev.get("rev"), "params": params, "metrics": metrics
                }  # fmt: skip
    return found


def run_experiment(repo: Repo, run: Run, overrides: list[str]) -> None:
    """``dvc exp run --name <run.name> -S <override> ...``; the outcome goes to ``run``."""
    run.overrides = list(overrides)
    args = ["exp", "run", "--name", run.name]
    for s in run.overrides:
        args += ["-S", s]
    log.info("dvc %s", " ".join(args))
    t0 = time.perf_counter()
    proc = repo.dvc(*args, check=False)
    run.seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        run.status = "failed"
        run.error = (proc.stdout[-1500:] + "\n" + proc.stderr[-2500:]).strip()
        log.error("experiment %s failed after %.0f s:\n%s", run.name, run.seconds, run.error)
    else:
        run.status = "ok"
        log.info("experiment %s done in %.0f s", run.name, run.seconds)


def open_repo(path: Path) -> tuple[Repo, str, list[str], str]:
    """(repo, HEAD commit, tracked files that differ from it, HEAD's params.yaml text)."""
    repo = Repo(path.resolve())
    if repo.git("rev-parse", "--verify", "-q", "HEAD", check=False).returncode != 0:
        raise SystemExit(f"{repo.root}: dvc exp run needs a git repository with a commit")
    commit = repo.git("rev-parse", "HEAD").stdout.strip()
    if repo.git("symbolic-ref", "-q", "HEAD", check=False).returncode != 0:
        # a `dvc exp run` killed mid-run leaves the workspace here; commits made now (the
        # results file included) would belong to no branch
        log.warning(
            "%s: HEAD is detached at %s (as a killed `dvc exp run` leaves it); commits "
            "made now belong to no branch. If that is not intended: `git checkout <branch>`, "
            "or `git branch -f <branch> HEAD && git checkout <branch>` to keep this commit",
            repo.root, commit[:12],
        )  # fmt: skip
    dirty = [line[3:] for line in repo.git("status", "--porcelain", "-uno").stdout.splitlines()]
    return repo, commit, dirty, repo.git("show", "HEAD:params.yaml").stdout


def collect(repo: Repo, runs: list[Run]) -> None:
    """Fill each successful run's commit, params and metrics from ``dvc exp show``."""
    shown = exp_show(repo)
    for run in runs:
        if run.status != "ok":
            continue
        if run.name not in shown:
            run.status, run.error = "failed", "dvc exp show lists no experiment of this name"
            continue
        run.rev = shown[run.name]["rev"]
        run.params = shown[run.name]["params"]
        run.metrics = {  # the details: `dvc exp show` has only the headline figures
            stage: committed_metrics(repo, run.rev, run.params, stage) or {}
            for stage in shown[run.name]["metrics"]
        }
        run.bootstrap = experiment_distributions(repo, run.rev, run.params)


def committed_metrics(repo: Repo, rev: str | None, params: dict, stage: str) -> dict | None:
    """The stage's details (``<paths.metrics>/details/<stage>.json``, everything the stage
    returned; ``metrics/<stage>.json`` holds only its headline figures) as the experiment
    commit ``rev`` holds them (git-tracked, ``cache: false``); None when not there."""
    if not rev:
        return None
    path = f"{get(params, 'paths', 'metrics') or 'metrics'}/{DETAILS}/{stage}.json"
    shown = repo.git("show", f"{rev}:{path}", check=False)
    if shown.returncode != 0:
        return None
    try:
        data = json.loads(shown.stdout)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def cached_output_file(repo: Repo, lock: dict, out_path: str, relpath: str) -> Path | None:
    """The DVC cache file of ``relpath`` inside the directory output ``out_path`` as the
    parsed dvc.lock ``lock`` records it (DVC 3: ``<cache>/files/md5/xx/rest``, a directory
    being a ``.dir`` JSON list of its files); None when any link is missing."""

    def blob(md5: str) -> Path:
        return repo.cache_dir / "files" / "md5" / md5[:2] / md5[2:]

    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if out.get("path") != out_path or not str(out.get("md5", "")).endswith(".dir"):
                continue
            manifest = blob(out["md5"])
            if not manifest.is_file():
                return None
            for entry in json.loads(manifest.read_text()):
                if entry.get("relpath") == relpath and blob(entry["md5"]).is_file():
                    return blob(entry["md5"])
    return None


def experiment_distributions(repo: Repo, rev: str | None, params: dict) -> dict[str, dict]:
    """The classify and detect stages' bootstrap distributions (``bootstrap.npz`` in
    ``paths.classify`` and ``paths.detect``: settings obj, img, det) of the experiment
    commit ``rev``, read from the DVC cache through its dvc.lock; those absent are left
    out (logged)."""
    shown = repo.git("show", f"{rev}:dvc.lock", check=False) if rev else None
    lock = (yaml.safe_load(shown.stdout) or {}) if shown and shown.returncode == 0 else {}
    out: dict[str, dict] = {}
    for stage in ("classify", "detect"):
        path = str(get(params, "paths", stage) or f"data/{stage}")
        found = cached_output_file(repo, lock, path, DISTRIBUTIONS_FILE)
        if found is None:
            log.warning("%s of %s: no %s/%s in the DVC cache: no interval pooled over seeds "
                        "from it", stage, (rev or "?")[:12], path, DISTRIBUTIONS_FILE)  # fmt: skip
            continue
        out.update(read_distributions(found))
    return out


def baseline_resets(params_text: str, overrides: list[str]) -> list[str]:
    """``key=value`` with the value of ``params_text`` (the workspace's params.yaml) for each
    key some baseline overrides (method, train.pairs, train.lr, ...) that ``overrides``
    does not set."""
    params = yaml.safe_load(params_text) or {}
    own = {o.split("=", 1)[0] for o in overrides}
    keys = dict.fromkeys(o.split("=", 1)[0] for b in BASELINES.values() for o in b)
    for sets in CONTROL_SETS.values():  # and the drift-matched controls'
        keys.update(dict.fromkeys(o.split("=", 1)[0] for o in sets))
    out = []
    for key in keys:
        if key in own:
            continue
        node: Any = params
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            out.append(f"{key}={json.dumps(node) if isinstance(node, bool) else node}")
    return out


def baseline_overrides(base: str, mech: str | None) -> list[str]:
    """The -S of baseline ``base`` (run on ``mech``'s pairs, None: the workspace's): its
    BASELINES entry; the drift-matched control: the control's, then what --control-drift
    (or --control-lr) gave it."""
    if base == CONTROL_DRIFT:
        return [*BASELINES["control"], *CONTROL_SETS[mech]]
    return list(BASELINES[base])


def run_order(runs: list[Run], own: str, base_seed: int) -> list[Run]:
    """The order to run in: the runs of one proposal one after the other, each proposal's
    baselines before its SCN runs (as listed otherwise), the workspace's own proposal last
    and its own SCN at its own seed at the very end (the workspace ends as that run). The
    stages before train have an uncached output (their git-tracked details JSON), which
    keeps DVC from saving them in its run cache: every change of proposal reruns
    proposals, pairs and targets (and yolo)."""

    def key(r: Run) -> tuple[bool, str, bool]:
        proposal = proposal_of(r.mechanism, own)
        return proposal == own, proposal, r.mechanism == own and r.seed == base_seed

    return sorted(runs, key=key)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--proposals", default=",".join(MECHANISMS),
                    help=f"comma-separated subset of {', '.join(MECHANISMS)}")  # fmt: skip
    ap.add_argument("--baselines", default=",".join(DEFAULT_BASELINES),
                    help=f"comma-separated subset of {', '.join(BASELINES)}, each with the "
                    "workspace's proposal, or of <baseline>-<mechanism> (control-bbox: the "
                    "shuffled-pairs control on BBox pairs), or '' for none (default: "
                    f"{','.join(DEFAULT_BASELINES)})")  # fmt: skip
    ap.add_argument("--control-lr", action="append", default=[], metavar="[MECHANISM=]LR",
                    help="also run the shuffled-pairs control at this train.lr (for a run "
                    "that keeps its last epoch: under train.select=best the selected epoch "
                    f"sets the drift) as baseline {CONTROL_DRIFT!r} on the workspace's "
                    f"proposal, or with MECHANISM= as {CONTROL_DRIFT}-MECHANISM on that "
                    "mechanism's pairs; repeatable; short for --control-drift "
                    "[MECHANISM:]train.lr=LR")  # fmt: skip
    ap.add_argument("--control-drift", action="append", default=[],
                    metavar="[MECHANISM:]KEY=VALUE[,KEY=VALUE...]",
                    help="also run the shuffled-pairs control with these overrides, chosen so "
                    "that its h1 drift matches the SCN's (e.g. train.select=last,"
                    "train.early_stop_patience=0,train.epochs=2, as python -m "
                    "experiments.regimes --controls finds them), as baseline "
                    f"{CONTROL_DRIFT!r}, or with "
                    f"MECHANISM: as {CONTROL_DRIFT}-MECHANISM; repeatable")  # fmt: skip
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="extra params override passed to every `dvc exp run` as -S")  # fmt: skip
    ap.add_argument("--seeds", type=int, default=3,
                    help="SCN training seeds per mechanism and baseline: train.seed, "
                    "train.seed + 1, ... (default 3)")  # fmt: skip
    ap.add_argument("--reuse", action="store_true",
                    help="keep an experiment of the same name on this commit whose params "
                    "hold the same overrides instead of rerunning it (an interrupted run "
                    "resumes)")  # fmt: skip
    ap.add_argument("--no-run", action="store_true",
                    help="run nothing: write the results file from the experiments of this "
                    "commit that --reuse would keep; the others are reported as not run "
                    "(a results file while, or after, some runs could not be made)")  # fmt: skip
    ap.add_argument("--repo", type=Path, default=ROOT, help="the git + DVC repository")
    ap.add_argument("--output", type=Path, default=None, help="default: <repo>/RESULTS.md")
    ap.add_argument("--prefix", default="results", help="experiment names: <prefix>-<m>")
    args = ap.parse_args(argv)
    mechs = [m.strip() for m in args.proposals.split(",") if m.strip()]
    bad = [m for m in mechs if m not in MECHANISMS]
    if bad or not mechs or len(set(mechs)) != len(mechs):
        ap.error(f"--proposals: {args.proposals!r}; allowed: distinct values of "
                 f"{', '.join(MECHANISMS)}")  # fmt: skip
    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    bad = [b for b in baselines if not baseline_of(b)]
    if bad or len(set(baselines)) != len(baselines):
        ap.error(f"--baselines: {args.baselines!r}; allowed: distinct values of "
                 f"{', '.join(BASELINES)}, each optionally with -<mechanism> "
                 f"({', '.join(MECHANISMS)}), or ''")  # fmt: skip
    CONTROL_SETS.clear()
    drifts = []  # (the option's text, mechanism or "", its overrides)
    for text in args.control_lr:
        mech, _, value = text.rpartition("=")
        try:
            lr = float(value)
        except ValueError:
            lr = float("nan")
        if not lr > 0:
            ap.error(f"--control-lr: {text!r}; allowed: LR or MECHANISM=LR with LR > 0")
        drifts.append((f"--control-lr {text}", mech, [f"train.lr={lr:g}"]))
    for text in args.control_drift:
        mech, _, sets = text.rpartition(":")
        items = [x.strip() for x in sets.split(",") if x.strip()]
        if not items or any("=" not in x or x.split("=", 1)[0] in CONTROL_FIXED for x in items):
            ap.error(f"--control-drift: {text!r}; allowed: [MECHANISM:]KEY=VALUE[,...] with "
                     f"keys other than {', '.join(CONTROL_FIXED)}")  # fmt: skip
        drifts.append((f"--control-drift {text}", mech, items))
    for text, mech, sets in drifts:
        if (mech and mech not in MECHANISMS) or (mech or None) in CONTROL_SETS:
            ap.error(f"{text}: MECHANISM: one of {', '.join(MECHANISMS)}, each proposal's "
                     "drift-matched control given once")  # fmt: skip
        CONTROL_SETS[mech or None] = sets
        name = f"{CONTROL_DRIFT}-{mech}" if mech else CONTROL_DRIFT
        if name not in baselines:
            baselines.append(name)
    specs = [baseline_of(b) for b in baselines]  # every one a baseline (checked above)
    lacking = [b for b, (base, mech) in zip(baselines, specs, strict=True)
               if base == CONTROL_DRIFT and mech not in CONTROL_SETS]  # fmt: skip
    if lacking:
        ap.error(f"--baselines: {', '.join(lacking)} needs its settings: --control-drift "
                 "[MECHANISM:]KEY=VALUE,... or --control-lr [MECHANISM=]LR")  # fmt: skip
    args.baseline_names = baselines
    if args.seeds < 1:
        ap.error(f"--seeds: {args.seeds}; allowed: an integer >= 1")
    for s in args.sets:
        if "=" not in s or s.split("=", 1)[0].strip() in ("", "proposal", "method", "train.seed"):
            ap.error(f"--set: {s!r}; allowed: KEY=VALUE with a key other than proposal, "
                     "method, train.seed (use --seeds)")  # fmt: skip
    args.mechanisms = mechs
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    repo, commit, dirty, base_text = open_repo(args.repo)
    output = (args.output or repo.root / "RESULTS.md").resolve()
    params_path = repo.root / "params.yaml"
    workspace_bytes = params_path.read_bytes()
    own = (yaml.safe_load(workspace_bytes) or {}).get("proposal")

    base_seed = int(get(yaml.safe_load(workspace_bytes) or {}, "train", "seed") or 0)
    seeds = [base_seed + i for i in range(args.seeds)]

    def seeded(mech: str) -> list[Run]:  # the workspace's seed keeps the plain name
        return [Run(mech, f"{args.prefix}-{mech}" + ("" if s == base_seed else f"-seed{s}"),
                    seed=s) for s in seeds]  # fmt: skip

    runs = [r for m in args.mechanisms for r in seeded(m)]
    baselines = [r for b in args.baseline_names for r in seeded(b)]
    order = run_order(baselines + runs, own, base_seed)
    runs += baselines
    existing = exp_show(repo)
    try:
        for run in order:
            spec = baseline_of(run.mechanism)
            if spec is not None:
                overrides = [f"proposal={proposal_of(run.mechanism, own)}",
                             *baseline_overrides(*spec), *args.sets]  # fmt: skip
            else:
                overrides = [f"proposal={run.mechanism}", "method=scn", *args.sets]
            # `dvc exp run -S` leaves its edits in the workspace: every key a baseline sets
            # is set back to the workspace's own value by the runs that do not set it
            overrides = [*baseline_resets(base_text, overrides), *overrides]
            # every run states its seed: `dvc exp run -S` leaves its edits in the workspace,
            # so a run without it would inherit the previous run's seed
            overrides.append(f"train.seed={run.seed}")
            made = run.name in existing and matches(existing[run.name]["params"], overrides)
            if made and (args.reuse or args.no_run):
                log.info("reusing the existing experiment %s of %s", run.name, commit[:12])
                run.status, run.overrides = "ok", overrides
                continue
            if args.no_run:
                log.warning("%s: no experiment of this name with these params on %s; "
                            "reported as not run", run.name, commit[:12])  # fmt: skip
                continue
            if run.name in existing:
                log.warning("replacing the existing experiment %s of %s", run.name, commit[:12])
                repo.dvc("exp", "remove", run.name)
            if params_path.read_bytes() != workspace_bytes:  # and start from the workspace's
                with atomic_path(params_path) as tmp:
                    tmp.write_bytes(workspace_bytes)
            run_experiment(repo, run, overrides)
    finally:
        if params_path.read_bytes() != workspace_bytes:
            with atomic_path(params_path) as tmp:
                tmp.write_bytes(workspace_bytes)
            log.info("params.yaml written back; data/, metrics/ and dvc.lock hold the last "
                     "experiment (%s)", order[-1].name)  # fmt: skip

    collect(repo, runs)

    context = {
        "commit": commit,
        "dirty": dirty,
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            ["python -m experiments.results", *(argv if argv is not None else sys.argv[1:])]
        ),
        "dvc_version": repo.dvc("--version").stdout.strip(),
        "base_params": yaml.safe_load(base_text) or {},
        "base_params_text": base_text,
        "base_params_sha256": hashlib.sha256(base_text.encode()).hexdigest(),
    }
    figure = output.with_name(f"{output.stem}_lowshot.png")
    if plot_lowshot_differences(figure, by_mechanism(runs)):
        context["lowshot_figure"] = figure.name
        log.info("wrote %s", figure)
    with atomic_path(output) as tmp:
        tmp.write_text(render_results(runs, context))
    log.info("wrote %s", output)
    return 0 if all(r.status == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
