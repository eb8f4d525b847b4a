"""Read and write the proposals HDF5 artifact (``docs/artifacts.md``, CSR layout).

Datasets: ``boxes`` (N, 4) float32, ``scores`` (N,) float32, ``offsets``
(n_images + 1,) int64, ``image_ids`` (n_images,) UTF-8 strings, ``image_sizes``
(n_images, 2) int32 (width, height). Attributes: ``method``, ``edge_source``,
``thresholds`` (JSON), ``weights_sha256``, ``dataset``, ``split``, ``code_version``,
``created_by``, ``params`` (JSON).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.errors import DataError
from pipeline.io import atomic_path
from pipeline.proposals.base import ProposalSet
from pipeline.provenance import code_version

log = logging.getLogger(__name__)

REQUIRED_DATASETS = ("boxes", "scores", "offsets", "image_ids", "image_sizes")
REQUIRED_ATTRS = ("method", "edge_source", "thresholds", "weights_sha256", "code_version")
JSON_ATTRS = ("thresholds", "params")


def _attr_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, Path):
        return str(value)
    return value


def write_proposals(
    path: str | Path, proposals: ProposalSet, provenance: dict[str, Any] | None = None
) -> Path:
    """Write ``proposals`` to ``path`` atomically.

    Attributes are ``proposals.provenance`` updated with ``provenance`` (e.g. ``dataset``,
    ``split``, ``created_by``, ``params``); ``code_version`` is added; the method's
    ``edge_source``, ``thresholds`` and ``weights_sha256`` default to empty.
    """
    path = Path(path)
    attrs: dict[str, Any] = {
        "method": "",
        "edge_source": "",
        "thresholds": {},
        "weights_sha256": "",
        "code_version": code_version(),
    }
    attrs.update(proposals.provenance)
    attrs.update(provenance or {})
    n = len(proposals)
    boxes = (
        np.concatenate(proposals.boxes).astype(np.float32).reshape(-1, 4)
        if n
        else np.zeros((0, 4), np.float32)
    )
    scores = (
        np.concatenate(proposals.scores).astype(np.float32).reshape(-1)
        if n
        else np.zeros((0,), np.float32)
    )
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as fh:
            fh.create_dataset("boxes", data=boxes)  # (N, 4)
            fh.create_dataset("scores", data=scores)  # (N,)
            fh.create_dataset("offsets", data=proposals.offsets())  # (n_images + 1,)
            fh.create_dataset(
                "image_ids",
                data=np.array(proposals.image_ids, dtype=object),
                dtype=h5py.string_dtype("utf-8"),
            )
            fh.create_dataset("image_sizes", data=proposals.image_sizes.astype(np.int32))
            for key, value in attrs.items():
                fh.attrs[key] = _attr_value(value)
    log.info("wrote %s: %d images, %d boxes", path, n, len(boxes))
    return path


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_proposals(path: str | Path, expect_method: str | None = None) -> ProposalSet:
    """Read a proposals file; :class:`DataError` naming the file when it is malformed.

    ``expect_method`` checks the ``method`` attribute.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "proposals file not found", kind="missing_proposals")
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise DataError(
            path, f"not a readable HDF5 file: {err}", kind="corrupt_proposals"
        ) from None
    with fh:
        missing = [k for k in REQUIRED_DATASETS if k not in fh]
        if missing:
            raise DataError(
                path,
                f"missing datasets {missing}; expected {list(REQUIRED_DATASETS)}",
                kind="malformed_proposals",
            )
        missing = [k for k in REQUIRED_ATTRS if k not in fh.attrs]
        if missing:
            raise DataError(
                path,
                f"missing attributes {missing}; expected {list(REQUIRED_ATTRS)}",
                kind="malformed_proposals",
            )
        boxes = fh["boxes"][:]
        scores = fh["scores"][:]
        offsets = fh["offsets"][:].astype(np.int64)
        ids = [_decode(s) for s in fh["image_ids"][:]]
        sizes = fh["image_sizes"][:]
        attrs = {k: _decode(v) for k, v in fh.attrs.items()}
    for key in JSON_ATTRS:
        if isinstance(attrs.get(key), str) and attrs[key]:
            try:
                attrs[key] = json.loads(attrs[key])
            except json.JSONDecodeError:
                raise DataError(
                    path, f"attribute {key!r} is not valid JSON", kind="malformed_proposals"
                ) from None
    n = len(ids)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(
            path, f"boxes has shape {boxes.shape}; expected (N, 4)", kind="malformed_proposals"
        )
    if scores.shape != (len(boxes),):
        raise DataError(
            path,
            f"scores has shape {scores.shape}; expected ({len(boxes)},)",
            kind="malformed_proposals",
        )
    if sizes.shape != (n, 2):
        raise DataError(
            path,
            f"image_sizes has shape {sizes.shape}; expected ({n}, 2)",
            kind="malformed_proposals",
        )
    if (
        offsets.shape != (n + 1,)
        or offsets[0] != 0
        or offsets[-1] != len(boxes)
        or np.any(np.diff(offsets) < 0)
    ):
        raise DataError(
            path,
            f"offsets (shape {offsets.shape}) are not a non-decreasing CSR index "
            f"from 0 to {len(boxes)}",
            kind="malformed_proposals",
        )
    if expect_method is not None and attrs.get("method") != expect_method:
        raise DataError(
            path,
            f"method is {attrs.get('method')!r}, expected {expect_method!r}; "
            "rerun the proposals stage",
            kind="stale_proposals",
        )
    return ProposalSet(
        image_ids=ids,
        image_sizes=sizes,
        boxes=[boxes[offsets[k] : offsets[k + 1]] for k in range(n)],
        scores=[scores[offsets[k] : offsets[k + 1]] for k in range(n)],
        provenance=attrs,
    )
