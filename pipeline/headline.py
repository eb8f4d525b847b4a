"""The headline figures: what each stage declares as its DVC metric.

A stage's function returns every figure it has (per-class APs, every low-shot draw,
histories); :func:`pipeline.runner.execute` writes all of that to
``PathsConfig.details_file(stage)`` (``metrics/details/<stage>.json``, a git-tracked
output) and the few figures that :data:`HEADLINE` names for the stage to
``PathsConfig.metrics_file(stage)`` (``metrics/<stage>.json``, the DVC metric), so that
``dvc exp show``, ``dvc metrics show`` and ``dvc metrics diff`` print tens of numbers,
not a thousand.

:data:`HEADLINE` maps a stage to ``(name, path)`` pairs, in the order of the columns:

- ``name`` is the key in the headline file and so the column ``dvc exp show`` prints.
  Names are short, unique over all stages (DVC prefixes a name two files share with the
  file's path), without ``.`` or ``/`` (README's ``--drop``/``--keep`` patterns tell
  params, which have dots, and dependencies, which have slashes, from them) and grouped
  by prefix for those patterns: ``obj_``, ``img_``, ``det_`` (the SVM and detection mAP
  of both networks, their difference ``_diff`` and its 95% interval ``_lo``, ``_hi``),
  ``k<k>_`` (low-shot Obj at k positives), the SCN's learning figures (``expl*``,
  ``ridge``, ``headroom``, ``ctx_*``, ...), ``<stage>_s`` (seconds) and
  ``<stage>_skip`` (skipped items).
- ``path`` is a dotted key path into the stage's returned dict. A key that has dots of
  its own (``recall_iou0.5``) is matched whole. ``name[k=V]`` takes the element of list
  ``name`` at the position where the list ``k`` of the nearest enclosing dict on the path
  holds ``V`` (the low-shot lists run over ``lowshot_k``). ``*`` stands for every key of
  a dict; the figure is then the sum of the numbers found (skipped counts per split).

A path that leads nowhere (a variant of the stage that does not produce the key, e.g.
``method: doersch`` has no ``test_explained``) is left out of the headline, silently: the
table may name figures a later version of a stage adds. To add a figure: one
``(name, path)`` line in the stage's list below; ``tests/test_headline.py`` checks the
rules above.
"""

from __future__ import annotations

import math
import re
from typing import Any

_LIST_AT = re.compile(r"^(?P<key>.+)\[k=(?P<value>[^\]]+)\]$")


def _seconds(stage: str) -> tuple[str, str]:
    return (f"{stage}_s", "seconds")


#: stage -> ((headline name, dotted path into the stage's details), ...)
HEADLINE: dict[str, tuple[tuple[str, str], ...]] = {
    "scenes": (_seconds("scenes"),),
    "yolo": (("yolo_skip", "skipped.skipped"), _seconds("yolo")),
    "proposals": (
        ("recall", "splits.train.recall_iou0.5"),
        ("proposals_skip", "splits.*.skipped"),
        _seconds("proposals"),
    ),
    "detect_proposals": (
        ("detect_proposals_skip", "splits.*.skipped"),
        _seconds("detect_proposals"),
    ),
    "pairs": (
        ("pairs", "scn.pairs"),
        ("pairs_lowiou", "scn.share_iou_below_0.2"),
        ("pairs_ovl", "scn.share_overlapping"),
        _seconds("pairs"),
    ),
    "targets": (_seconds("targets"),),
    "diagnose_objects": (
        ("headroom", "headroom.map"),
        ("k1_ceiling", "lowshot.settings.obj.ceiling.map_mean[k=1]"),
        ("ctx_ratio", "context.ratio"),
        ("diagnose_objects_skip", "skipped.*.skipped"),
        _seconds("diagnose_objects"),
    ),
    "diagnose": (
        ("ridge", "targets.ridge_h1_offset"),
        ("diagnose_skip", "skipped.*.skipped"),
        _seconds("diagnose"),
    ),
    "train": (
        ("expl", "test_explained"),
        ("expl_frozen", "frozen_test_explained"),
        ("expl_ovl", "test_explained_overlap"),
        ("expl_nonovl", "test_explained_nonoverlap"),
        ("gain_nonovl", "finetune_gain_nonoverlap"),
        ("h1_drift", "h1_drift"),
        ("doersch_acc", "test_accuracy"),
        _seconds("train"),
    ),
    "classify_original": (
        ("obj_orig", "obj.original.map"),
        ("img_orig", "img.original.map"),
        ("k1_orig", "lowshot.settings.obj.original.map_mean[k=1]"),
        ("classify_original_skip", "skipped.*.skipped"),
        _seconds("classify_original"),
    ),
    "classify": (
        ("obj_scn", "obj.scn.map"),
        ("obj_diff", "obj.map_diff_ci.value"),
        ("obj_lo", "obj.map_diff_ci.ci_low"),
        ("obj_hi", "obj.map_diff_ci.ci_high"),
        ("img_scn", "img.scn.map"),
        ("img_diff", "img.map_diff_ci.value"),
        ("img_lo", "img.map_diff_ci.ci_low"),
        ("img_hi", "img.map_diff_ci.ci_high"),
        ("k1_scn", "lowshot.settings.obj.scn.map_mean[k=1]"),
        ("k1_diff", "lowshot_diff.obj.k1.diff"),
        ("k1_lo", "lowshot_diff.obj.k1.lo"),
        ("k1_hi", "lowshot_diff.obj.k1.hi"),
        ("k2_diff", "lowshot_diff.obj.k2.diff"),
        ("k2_lo", "lowshot_diff.obj.k2.lo"),
        ("k2_hi", "lowshot_diff.obj.k2.hi"),
        ("ctx_h3", "context.context.accuracy"),
        ("classify_skip", "skipped.*.skipped"),
        _seconds("classify"),
    ),
    "detect_original": (
        ("det_orig", "original.map"),
        ("detect_original_skip", "skipped.*.skipped"),
        _seconds("detect_original"),
    ),
    "detect": (
        ("det_scn", "scn.map"),
        ("det_diff", "map_diff_ci.value"),
        ("det_lo", "map_diff_ci.ci_low"),
        ("det_hi", "map_diff_ci.ci_high"),
        ("detect_skip", "skipped.*.skipped"),
        _seconds("detect"),
    ),
    "synthetic": (
        ("syn_ratio", "test_mse_ratio"),
        _seconds("synthetic"),
    ),
}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _list_index(enclosing: list[dict], value: str) -> int | None:
    """The position of ``value`` in the ``k`` list of the nearest enclosing dict."""
    for node in reversed(enclosing):
        ks = node.get("k")
        if isinstance(ks, list):
            matches = [i for i, k in enumerate(ks) if str(k) == value]
            return matches[0] if matches else None
    return None


def _find(node: Any, parts: list[str], enclosing: list[dict]) -> list[Any]:
    """Every value at ``parts`` below ``node`` (several only through ``*``)."""
    if not parts:
        return [node]
    if not isinstance(node, dict):
        return []
    if parts[0] == "*":
        return [v for child in node.values() for v in _find(child, parts[1:], [*enclosing, node])]
    for n in range(len(parts), 0, -1):  # the longest key first: keys may have dots
        key = ".".join(parts[:n])
        if key in node:
            return _find(node[key], parts[n:], [*enclosing, node])
        at = _LIST_AT.match(key)
        if at and isinstance(node.get(at["key"]), list):
            i = _list_index([*enclosing, node], at["value"])
            if i is None or i >= len(node[at["key"]]):
                return []
            return _find(node[at["key"]][i], parts[n:], [*enclosing, node])
    return []


def lookup(details: dict, path: str) -> Any:
    """The figure at ``path`` (module docstring) in ``details``; None where there is none.

    Through ``*``, the sum of the numbers found (None when none is). A value that is not a
    number, a bool or a string (a dict, a list, None, nan) is not a headline figure: None.
    """
    parts = path.split(".")
    found = _find(details, parts, [])
    if "*" in parts:
        numbers = [v for v in found if _number(v)]
        return sum(numbers) if numbers else None
    if len(found) != 1:
        return None
    value = found[0]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, (int, float, str, bool)) else None


def headline(stage: str, details: dict) -> dict[str, Any]:
    """The headline figures of ``stage`` from its ``details``, in :data:`HEADLINE`'s order;
    the paths that lead nowhere are left out."""
    out: dict[str, Any] = {}
    for name, path in HEADLINE.get(stage, ()):
        value = lookup(details, path)
        if value is not None:
            out[name] = value
    return out
