"""A tiny VOC-layout dataset written by hand (no generator needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

TINY_CLASSES = ("sun", "cloud", "bird", "tree", "house", "window", "car", "wheel", "ball", "plate")


def voc_xml(image_id: str, width: int, height: int, objects: list[dict]) -> str:
    """A VOC annotation; each object: name, box (1-based xmin, ymin, xmax, ymax), difficult."""
    objs = []
    for o in objects:
        xmin, ymin, xmax, ymax = o["box"]
        objs.append(
            f"  <object>\n    <name>{o['name']}</name>\n    <pose>Unspecified</pose>\n"
            f"    <truncated>{int(o.get('truncated', 0))}</truncated>\n"
            f"    <difficult>{int(o.get('difficult', 0))}</difficult>\n"
            f"    <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>\n  </object>\n"
        )
    return (
        f"<annotation>\n  <folder>TINY</folder>\n  <filename>{image_id}.jpg</filename>\n"
        f"  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>\n"
        f"  <segmented>0</segmented>\n{''.join(objs)}</annotation>\n"
    )


def write_tiny_voc(
    root: Path, n_images: int = 8, size: int = 96, seed: int = 0, name: str = "SCENES"
) -> Path:
    """Write ``root/VOCdevkit/<name>`` with coloured shapes; half train, half test.

    Returns the ``VOCdevkit/<name>`` folder. Deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    year = root / "VOCdevkit" / name
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (year / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"{i:06d}" for i in range(n_images)]
    labels = {c: {} for c in TINY_CLASSES}
    for image_id in ids:
        bg = rng.integers(0, 255, 3)
        im = Image.new("RGB", (size, size), tuple(int(v) for v in bg))
        draw = ImageDraw.Draw(im)
        objects = []
        for _ in range(int(rng.integers(2, 5))):
            cls = TINY_CLASSES[int(rng.integers(len(TINY_CLASSES)))]
            w, h = (int(v) for v in rng.integers(12, size // 2, 2))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            colour = tuple(int(v) for v in rng.integers(0, 255, 3))
            if TINY_CLASSES.index(cls) % 2:
                draw.ellipse([x, y, x + w - 1, y + h - 1], fill=colour)
            else:
                draw.rectangle([x, y, x + w - 1, y + h - 1], fill=colour)
            objects.append({"name": cls, "box": (x + 1, y + 1, x + w, y + h)})
        im.save(year / "JPEGImages" / f"{image_id}.jpg", quality=90)
        (year / "Annotations" / f"{image_id}.xml").write_text(
            voc_xml(image_id, size, size, objects)
        )
        for c in TINY_CLASSES:
            labels[c][image_id] = 1 if any(o["name"] == c for o in objects) else -1
    half = n_images // 2
    splits = {"train": ids[:half], "test": ids[half:], "val": [], "trainval": ids[:half]}
    for split, members in splits.items():
        (year / "ImageSets" / "Main" / f"{split}.txt").write_text(
            "".join(f"{i}\n" for i in members)
        )
        for c in TINY_CLASSES:
            (year / "ImageSets" / "Main" / f"{c}_{split}.txt").write_text(
                "".join(f"{i} {labels[c][i]:2d}\n" for i in members)
            )
    return year
