"""The original-vs-trained comparison, shared by both protocols and the diagnosis.

The original network's side of an evaluation is a stage of its own (``classify_original``,
``detect_original``, ``diagnose_objects``), run once per dataset and backbone; the
trained network's stage (``classify``, ``detect``, ``diagnose``) reads its results back.
This module owns the three steps every such pair of stages repeats:

1. **read** the original's results, refusing a missing file (:func:`require_file`);
2. **check** their provenance: written by the expected stage (:func:`check_created_by`),
   with the params or settings the original's stage would use now (:func:`check_same`),
   each refusal a :class:`~pipeline.errors.DataError` naming the file and how to rerun;
3. **pair** the difference: trained - original with its paired bootstrap interval and the
   record of the resampled differences (:func:`paired_difference`), which the stage
   writes to ``bootstrap.npz`` (:func:`pipeline.evaluate.bootstrap.write_distributions`)
   for intervals pooled over training seeds.

Names: the two networks are :data:`ORIGINAL` and :data:`TRAINED`. The trained network's
key in metrics, details, feature caches and HDF5 groups is the string ``"scn"`` for every
method (``scn``, ``doersch``, the controls): it is kept as it was so that every stored
result stays comparable; in code the trained network is called *trained*.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DataError
from pipeline.evaluate.bootstrap import Interval, percentile_interval

log = logging.getLogger(__name__)

ORIGINAL = "original"
TRAINED = "scn"  # the trained network's key in stored results, whatever the method
NETWORKS = (ORIGINAL, TRAINED)


def plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples become lists)."""
    return json.loads(json.dumps(value))


def require_file(path: Path, what: str, rerun: str, kind: str = "missing") -> Path:
    """``path`` when it is a file, else a :class:`DataError` ``missing: <what>; <rerun>``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"missing: {what}; {rerun}", kind)
    return path


def check_created_by(path: Path, created_by: Any, stage: str, kind: str = "invalid") -> None:
    """Refuse a file whose ``created_by`` is not ``stage``."""
    if created_by != stage:
        raise DataError(path, f"written by {created_by!r}, not {stage}", kind)


def check_same(
    path: Path,
    have: dict[str, Any],
    want: dict[str, Any],
    rerun: str,
    what: str = "params",
    kind: str = "provenance_mismatch",
) -> None:
    """Refuse results made with other ``what`` than ``want``: ``have`` (read from ``path``)
    must equal ``want`` (as JSON gives it back) key for key; the error names every key that
    differs, with its value there and now."""
    want = plain(want)
    if have != want:
        keys = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        detail = "; ".join(f"{k}: {have.get(k)!r} there, {want.get(k)!r} now" for k in keys)
        raise DataError(path, f"made with other {what} ({detail}); {rerun}", kind=kind)


def difference(original: float | None, trained: float | None) -> float | None:
    """trained - original rounded to 6 digits; None when either is None."""
    return None if original is None or trained is None else round(trained - original, 6)


def paired_difference(
    value: float, diffs: np.ndarray, n_boot: int, seed: int, n_test: int, what: str
) -> tuple[Interval, dict]:
    """The percentile interval of a paired bootstrap (``value``: the trained - original
    difference, ``diffs``: its (n_boot,) resampled values on ``n_test`` test items, seeded by
    ``seed``) and the record the stage stores in ``bootstrap.npz`` under its key."""
    ci = percentile_interval(value, diffs, n_boot)
    record = {"value": value, "diffs": diffs, "seed": seed, "n_boot": n_boot, "n_test": n_test}
    log.info("%s: difference %.4f, 95%% interval [%.4f, %.4f] over %d resamples: %s",
             what, ci.value, ci.ci_low, ci.ci_high, ci.n_boot, ci.verdict)  # fmt: skip
    return ci, record
