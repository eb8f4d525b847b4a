"""The VOC07 low-shot linear-SVM protocol (VISSL's) next to the full one (issue 14).

**Sampler**, as VISSL's ``generate_voc07_low_shot_samples``
(``extra_scripts/create_low_shot_samples.py``): for one independent sample and one k,
every class c gets k positives drawn without replacement from the training items labelled
positive for c, and (C - 1) * k negatives drawn from those labelled negative for c; every
other item is ignored for c (difficult items are never drawn). Samples are independent
per (sample, k) and seeded here from ``seed`` (VISSL: Python's unseeded ``random``); both
networks get the same samples, so their difference is paired.

**Fit and test**: the project's full protocol
(:func:`pipeline.evaluate.classify.svm.train_and_test`:
class weights, L2-normalised rows, C per class by k-fold CV AP over the cost list on the
drawn items, the cost nearest 1 where a class has fewer than 2 drawn positives), tested
on the whole test split. Departure from VISSL, whose low-shot trainer fits every cost
and reports the cost with the best mean TEST mAP over the samples: choosing on the test
set is optimistic, so the cost here is chosen on the training sample as in the full
protocol. Reported per k: mean and standard deviation (``np.std``, as VISSL) of the mAP
over the samples.

**Infeasible k**: when a class has fewer than k training positives, k is skipped for that
setting, logged and listed in the metrics with the classes short of positives (VISSL
skips such k for Places205; VOC07 trainval has at least 96 positives per class). When a
class has fewer than (C - 1) * k negatives, all of them are used and the metrics count
the classes so capped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.evaluate.classify.svm import NewtonData, l2_normalize, train_and_test

log = logging.getLogger(__name__)


@dataclass
class Sample:
    """One low-shot draw: ``mask`` (N, C) the training items of each class, and the number
    of classes that had fewer than (C - 1) * k negatives (all used)."""

    mask: np.ndarray
    negatives_capped: int


def short_classes(labels: np.ndarray, k: int) -> list[int]:
    """Classes (columns of labels (N, C) in {1, -1, 0}) with fewer than k positives."""
    return [c for c in range(labels.shape[1]) if int((labels[:, c] == 1).sum()) < k]


def lowshot_sample(labels: np.ndarray, k: int, rng: np.random.Generator) -> Sample:
    """Draw k positives and (C - 1) * k negatives per class (see the module docstring).

    Raises ValueError naming the classes when one has fewer than k positives.
    """
    labels = np.asarray(labels)
    if k < 1:
        raise ValueError(f"k: {k} is not allowed; allowed: k >= 1")
    short = short_classes(labels, k)
    if short:
        raise ValueError(f"k={k}: classes {short} have fewer than {k} training positives")
    n, n_classes = labels.shape
    mask = np.zeros((n, n_classes), dtype=bool)
    capped = 0
    for c in range(n_classes):
        pos = np.flatnonzero(labels[:, c] == 1)
        neg = np.flatnonzero(labels[:, c] == -1)
        want = (n_classes - 1) * k
        capped += len(neg) < want
        mask[rng.choice(pos, size=k, replace=False), c] = True
        mask[rng.choice(neg, size=min(want, len(neg)), replace=False), c] = True
    return Sample(mask, capped)


def sample_rng(seed: int, sample: int, k: int) -> np.random.Generator:
    """The generator of one (sample, k) draw: independent across both, fixed by seed."""
    return np.random.default_rng([seed, sample, k])


def evaluate_lowshot(
    train: dict[str, tuple[np.ndarray, np.ndarray]],
    test: dict[str, tuple[np.ndarray, np.ndarray]],
    classes: Sequence[str],
    ks: Sequence[int],
    n_samples: int,
    costs: Sequence[float],
    folds: int,
    seed: int,
    desc: str = "lowshot",
    solver: str = "newton",
    device: torch.device | str | None = None,
    threads: int = 0,
    workers: int = 1,
    scores_out: dict | None = None,
) -> dict:
    """The low-shot protocol for several networks on the same items.

    ``train`` / ``test`` map a network name to (features (N, D), labels (N, C) in
    {1, -1, 0}); the labels must be the same for every network (the same items). Returns
    per network the mAP of every (k, sample), its mean and std per k, the skipped k with
    their short classes, and the capped-negative counts. ``scores_out``, when given, is
    filled with ``scores_out[network][k]``: (samples, M, C) float64, the test decision
    values of each sample's SVMs (nan for a class without one), what the paired bootstrap
    of two networks' low-shot difference resamples
    (:func:`pipeline.evaluate.bootstrap.draws_differences`); they stay out of the
    returned record.
    """
    nets = list(train)
    labels = train[nets[0]][1]
    for net in nets[1:]:
        if not np.array_equal(train[net][1], labels):
            raise ValueError(f"{desc}: networks {nets[0]} and {net} have different train labels")
    out: dict = {
        "k": [],
        "n_samples": n_samples,
        "skipped_k": {},
        "negatives_capped": {},
        **{net: {"map_mean": [], "map_std": [], "maps": []} for net in nets},
    }
    draws: dict[int, list[Sample]] = {}
    for k in ks:
        short = short_classes(labels, k)
        if short:
            names = [classes[c] for c in short]
            log.warning("%s: k=%d skipped: classes %s have fewer than %d positives",
                        desc, k, names, k)  # fmt: skip
            out["skipped_k"][str(k)] = names
            continue
        draws[k] = [lowshot_sample(labels, k, sample_rng(seed, s, k)) for s in range(n_samples)]
        out["k"].append(k)
        out["negatives_capped"][str(k)] = int(sum(d.negatives_capped for d in draws[k]))
    for net in nets:
        x, xte, yte = l2_normalize(train[net][0]), test[net][0], test[net][1]
        data = NewtonData(x, device) if solver == "newton" else None
        for k, samples in draws.items():
            maps, scores = [], []
            for d in samples:
                rows = np.flatnonzero(d.mask.any(axis=1))  # items drawn for some class
                res = train_and_test(
                    x[rows], labels[rows], xte, yte, classes, costs, folds, seed,
                    desc=f"{desc} {net} k={k}", workers=workers, solver=solver, device=device,
                    threads=threads, train_mask=d.mask[rows],
                    newton=None if data is None else data.subset(rows),
                )  # fmt: skip
                maps.append(res.map)
                scores.append(res.scores)  # (M, C)
            if scores_out is not None:
                scores_out.setdefault(net, {})[k] = np.stack(scores).astype(np.float64)
            out[net]["maps"].append([round(float(m), 6) for m in maps])
            out[net]["map_mean"].append(round(float(np.mean(maps)), 6))
            out[net]["map_std"].append(round(float(np.std(maps)), 6))
            log.info("%s %s k=%d: mAP %.4f +- %.4f over %d samples",
                     desc, net, k, np.mean(maps), np.std(maps), len(maps))  # fmt: skip
    return out


def plot_lowshot(path, results: dict[str, dict], networks: Sequence[str]) -> None:
    """mAP against k (log scale), mean and std over the samples, one panel per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.io import write_figure

    settings = list(results)
    if not settings:  # disabled: the declared plot still exists and says so
        fig, ax = plt.subplots(figsize=(5.2, 1.5))
        ax.text(0.5, 0.5, "low-shot evaluation disabled (classify.lowshot_k: [])",
                ha="center", va="center")  # fmt: skip
        ax.set_axis_off()
        write_figure(fig, path, dpi=110)
        return
    fig, axes = plt.subplots(1, len(settings), figsize=(5.2 * len(settings), 3.8), squeeze=False)
    colours = {"original": "tab:gray", "scn": "tab:blue", "ceiling": "tab:green"}
    for ax, setting in zip(axes[0], settings, strict=True):
        res = results[setting]
        for net in networks:
            mean = 100 * np.asarray(res[net]["map_mean"], dtype=float)
            std = 100 * np.asarray(res[net]["map_std"], dtype=float)
            ax.errorbar(res["k"], mean, yerr=std, marker="o", capsize=3, label=net,
                        color=colours.get(net))  # fmt: skip
        ax.set_xscale("log", base=2)
        if res["k"]:
            ax.set_xticks(res["k"], [str(k) for k in res["k"]])
        ax.set_xlabel("positives per class (k)")
        ax.set_ylabel("mAP (%)")
        skipped = ", ".join(res["skipped_k"]) or "none"
        ax.set_title(f"{setting}: low-shot SVM, {res['n_samples']} samples (skipped k: {skipped})",
                     fontsize=9)  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    write_figure(fig, path, dpi=110)


def plot_lowshot_diff(path, diffs: dict[str, dict[str, dict]], label: str, note: str = "") -> None:
    """The low-shot difference against k with its 95% interval, one panel per setting.

    ``diffs[setting]["k<k>"]``: ``diff``, ``lo``, ``hi``, ``verdict`` (fractions, as
    :meth:`pipeline.evaluate.bootstrap.Interval.to_short_dict` gives them); ``label``
    names the difference (e.g. "SCN - original"). Empty: the figure says why (``note``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.io import write_figure

    settings = [s for s, per in diffs.items() if per]
    if not settings:
        fig, ax = plt.subplots(figsize=(5.2, 1.5))
        ax.text(0.5, 0.5, note or "no low-shot difference", ha="center", va="center")
        ax.set_axis_off()
        write_figure(fig, path, dpi=110)
        return
    fig, axes = plt.subplots(1, len(settings), figsize=(5.2 * len(settings), 3.8), squeeze=False)
    for ax, setting in zip(axes[0], settings, strict=True):
        per = diffs[setting]
        ks = [int(key[1:]) for key in per]
        d = 100 * np.array([per[key]["diff"] for key in per], dtype=float)
        lo = 100 * np.array([per[key]["lo"] for key in per], dtype=float)
        hi = 100 * np.array([per[key]["hi"] for key in per], dtype=float)
        ax.axhline(0.0, color="black", lw=0.8)
        ax.errorbar(ks, d, yerr=[d - lo, hi - d], marker="o", capsize=3, color="tab:blue",
                    label=f"{label}, 95% interval")  # fmt: skip
        for k, h, key in zip(ks, hi, per, strict=True):
            ax.annotate(per[key]["verdict"].replace("no measurable difference", "n.m.d."),
                        (k, h), textcoords="offset points", xytext=(0, 4), ha="center",
                        fontsize=7)  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("positives per class (k)")
        ax.set_ylabel("mAP difference (points)")
        ax.set_title(f"{setting}: low-shot {label} (test items x draws)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    write_figure(fig, path, dpi=110)
