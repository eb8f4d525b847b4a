"""Draw images with boxes (``scn show``)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from PIL import Image, ImageDraw

from pipeline.data.voc import VOCDataset
from pipeline.errors import DataError
from pipeline.io import atomic_path


def proposals_for(path: Path, image_id: str) -> np.ndarray:
    """(K, 4) boxes of ``image_id`` from a proposals HDF5 file (CSR layout)."""
    with h5py.File(path, "r") as fh:
        ids = [s.decode() if isinstance(s, bytes) else s for s in fh["image_ids"][:]]
        if image_id not in ids:
            raise DataError(path, f"image {image_id!r} has no proposals in this file")
        i = ids.index(image_id)
        start, stop = fh["offsets"][i], fh["offsets"][i + 1]
        return fh["boxes"][start:stop]


def render_boxes(
    ds: VOCDataset, image_id: str, out: Path, proposals_file: Path | None = None
) -> Path:
    """Ground truth in green (difficult dashed-looking thin), proposals in red."""
    image = ds.by_id(image_id)
    canvas = Image.fromarray(ds.load_image(image))
    draw = ImageDraw.Draw(canvas)
    if proposals_file is not None:
        for box in proposals_for(proposals_file, image_id):
            draw.rectangle([float(v) for v in box], outline=(255, 0, 0), width=1)
    for obj in image.objects:
        draw.rectangle(list(obj.box), outline=(0, 255, 0), width=1 if obj.difficult else 2)
        draw.text((obj.box[0] + 2, obj.box[1] + 1), obj.name, fill=(0, 255, 0))
    with atomic_path(out) as tmp:
        canvas.save(tmp, format="PNG")
    return out
