"""Draw images with boxes (``scn show``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.data.voc import VOCDataset
from pipeline.errors import DataError
from pipeline.io import atomic_path


def proposals_for(path: Path, image_id: str) -> np.ndarray:
    """(K, 4) boxes of ``image_id`` from a proposals HDF5 file."""
    from pipeline.proposals.store import read_proposals

    props = read_proposals(path)
    if image_id not in props.image_ids:
        raise DataError(path, f"image {image_id!r} has no proposals in this file")
    return props.boxes[props.image_ids.index(image_id)]


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


def render_pair(ds: VOCDataset, pairs_file: Path, index: int, out: Path, scale: int = 2) -> Path:
    """Draw pair ``index`` of a pairs manifest: the top patch i (the target) in red, the
    bottom patch j (the input) in green, and the offset o_ij = b_i - b_j as an arrow from
    the centre of j to the centre of i, enlarged ``scale`` times for legibility."""
    from pipeline.pairs.manifest import read_manifest

    m = read_manifest(pairs_file)
    if not 0 <= index < len(m.top):
        raise DataError(pairs_file, f"pair {index} does not exist; allowed: 0..{len(m.top) - 1}")
    i, j = int(m.top[index]), int(m.bottom[index])
    image_id = m.image_ids[int(m.patch_image[i])]
    canvas = Image.fromarray(ds.load_image(ds.by_id(image_id)))
    canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    top, bottom = m.patch_box[i] * scale, m.patch_box[j] * scale  # (4,) each
    draw.rectangle([float(v) for v in top], outline=(255, 0, 0), width=2)
    draw.rectangle([float(v) for v in bottom], outline=(0, 255, 0), width=2)
    ci = ((top[0] + top[2]) / 2, (top[1] + top[3]) / 2)
    cj = ((bottom[0] + bottom[2]) / 2, (bottom[1] + bottom[3]) / 2)
    draw.line([cj, ci], fill=(255, 255, 0), width=2)
    draw.ellipse([ci[0] - 3, ci[1] - 3, ci[0] + 3, ci[1] + 3], fill=(255, 255, 0))
    offset = " ".join(f"{v:+.2f}" for v in m.offset[index])
    draw.text((4, 4), f"{image_id} pair {index}: top {i} (red) <- bottom {j} (green)",
              fill=(255, 255, 255))  # fmt: skip
    draw.text((4, 16), f"o_ij = {offset}", fill=(255, 255, 255))
    with atomic_path(out) as tmp:
        canvas.save(tmp, format="PNG")
    return out
