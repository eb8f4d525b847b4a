"""Human-readable summaries of the artifacts the pipeline writes (``scn inspect``)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from pipeline.errors import DataError

STATS_BYTES = 64 << 20  # feature statistics read at most this many bytes of leading rows


def _attr(value) -> str:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    text = str(value)
    return text if len(text) < 200 else text[:197] + "..."


def feature_stats(arr: np.ndarray) -> str:
    a = arr.astype(np.float64)
    return (
        f"mean={a.mean():.4g} std={a.std():.4g} min={a.min():.4g} max={a.max():.4g} "
        f"zeros={np.mean(a == 0):.1%}"
    )


def summarise_h5(path: Path, stats: bool = True) -> str:
    lines = [f"{path} (HDF5, {path.stat().st_size / 1e6:.2f} MB)"]
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise DataError(path, f"not a readable HDF5 file: {err}") from None
    with fh:
        for key, value in sorted(fh.attrs.items()):
            lines.append(f"  @{key} = {_attr(value)}")

        def visit(name: str, obj) -> None:
            if isinstance(obj, h5py.Group):
                lines.append(f"  {name}/")
                for key, value in sorted(obj.attrs.items()):
                    lines.append(f"    @{key} = {_attr(value)}")
                return
            comp = f", {obj.compression}" if obj.compression else ""
            chunks = f", chunks={obj.chunks}" if obj.chunks else ""
            line = f"  {name}: shape={obj.shape} dtype={obj.dtype}{comp}{chunks}"
            if stats and obj.dtype.kind == "f" and obj.size:
                row_bytes = max(1, obj.size // max(1, len(obj)) * obj.dtype.itemsize)
                rows = max(1, min(len(obj), STATS_BYTES // row_bytes))
                sample = "" if rows == len(obj) else f" (first {rows} rows)"
                line += "\n      " + feature_stats(obj[:rows]) + sample
            lines.append(line)
            for key, value in sorted(obj.attrs.items()):
                lines.append(f"    @{key} = {_attr(value)}")

        fh.visititems(visit)
    return "\n".join(lines)


def summarise_voc(path: Path) -> str:
    lines = [f"{path} (VOC-layout dataset)"]
    main = path / "ImageSets" / "Main"
    for f in sorted(main.glob("*.txt")):
        if "_" not in f.stem:
            n = sum(1 for line in f.read_text().splitlines() if line.strip())
            lines.append(f"  split {f.stem}: {n} images")
    n_xml = sum(1 for _ in (path / "Annotations").glob("*.xml"))
    n_jpg = sum(1 for _ in (path / "JPEGImages").glob("*.jpg"))
    lines.append(f"  {n_xml} annotations, {n_jpg} images")
    return "\n".join(lines)


def summarise_checkpoint(path: Path) -> str:
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    lines = [f"{path} (torch checkpoint)"]
    if not isinstance(ckpt, dict):
        return lines[0] + f": {type(ckpt).__name__}"
    for key, value in ckpt.items():
        if isinstance(value, dict) and value and all(hasattr(v, "shape") for v in value.values()):
            n = sum(int(np.prod(v.shape)) for v in value.values())
            lines.append(f"  {key}: {len(value)} tensors, {n:,} values")
        elif hasattr(value, "shape"):
            lines.append(f"  {key}: tensor {tuple(value.shape)}")
        else:
            lines.append(f"  {key}: {_attr(value)}")
    return "\n".join(lines)


def summarise(path: Path, stats: bool = True) -> str:
    """Dispatch on the artifact type."""
    path = Path(path)
    if path.is_dir():
        if (path / "Annotations").is_dir():
            return summarise_voc(path)
        parts = [f"{path}/"]
        for child in sorted(path.iterdir()):
            if child.is_file() and child.suffix in (".h5", ".hdf5"):
                parts.append(summarise_h5(child, stats))
            elif child.is_dir() and (child / "Annotations").is_dir():
                parts.append(summarise_voc(child))
            else:
                size = child.stat().st_size if child.is_file() else 0
                parts.append(f"  {child.name}{'/' if child.is_dir() else ''} {size or ''}")
        return "\n".join(parts)
    if path.suffix in (".h5", ".hdf5"):
        return summarise_h5(path, stats)
    if path.suffix == ".json":
        return json.dumps(json.loads(path.read_text()), indent=2, sort_keys=True)
    if path.suffix in (".pt", ".pth", ".ckpt"):
        return summarise_checkpoint(path)
    if path.suffix in (".csv", ".txt", ".yaml", ".yml", ".md"):
        text = path.read_text().splitlines()
        return "\n".join([f"{path} ({len(text)} lines)", *text[:20]])
    raise DataError(path, "unknown artifact type; expected .h5, .json, .pt, .csv or a folder")
