"""A VOC-layout folder of a few real photographs, for running the pipeline on real images
offline (no annotated real dataset ships in any package: REFERENCE.md section 5).

    .venv/bin/python -m tools.real_photos data/real       # writes data/real/VOCdevkit/VOC2012

then, for example (README, "Diagnose"):

    dvc exp run -S dataset=voc2012 -S data.voc_root=data/real/VOCdevkit \\
        -S data.eval_test_split=val diagnose

The photographs are the two that ultralytics ships (``bus.jpg``: a bus and four people;
``zidane.jpg``: two people), annotated here by hand in VOC's classes (``person``,
``bus``), 1-based inclusive corners as VOC writes them. Each photo gives four images:
itself and a centre crop go to ``train``; its mirror image and a mirrored corner crop go
to ``val`` (boxes transformed and clipped; a box keeping less than half of its area is
dropped, one cut by the crop is ``truncated``). Scikit-learn's two sample photos
(``china.jpg``, ``flower.jpg``) hold no VOC class; they are added to both splits
without objects, as VOC has images without an object of a given class. Eight images
are no benchmark: this folder is for checking that a stage runs on real photographs
(sizes, JPEG decoding, non-square images, few objects), not for measuring anything.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from PIL import Image

from pipeline.io import atomic_path

log = logging.getLogger("tools.real_photos")

# photo -> [(class, (xmin, ymin, xmax, ymax), truncated)] in the photo's own pixels
ANNOTATIONS: dict[str, list[tuple[str, tuple[int, int, int, int], bool]]] = {
    "bus.jpg": [
        ("bus", (17, 228, 801, 739), False),
        ("person", (50, 398, 248, 905), False),
        ("person", (222, 405, 346, 860), False),
        ("person", (668, 380, 810, 878), True),
        ("person", (1, 550, 76, 870), True),
    ],
    "zidane.jpg": [
        ("person", (120, 200, 1152, 720), True),
        ("person", (750, 40, 1140, 720), True),
    ],
    "china.jpg": [],
    "flower.jpg": [],
}
MAX_SIDE = 320  # photos are scaled down to this longest side (EdgeBoxes stays quick)


def photo_paths() -> dict[str, Path]:
    """Where the packaged photographs are on this machine."""
    import sklearn.datasets
    import ultralytics.utils

    sk = Path(os.path.dirname(sklearn.datasets.__file__)) / "images"
    ul = Path(ultralytics.utils.ASSETS)
    paths = {
        "bus.jpg": ul / "bus.jpg",
        "zidane.jpg": ul / "zidane.jpg",
        "china.jpg": sk / "china.jpg",
        "flower.jpg": sk / "flower.jpg",
    }
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"packaged photographs not found: {', '.join(missing)}")
    return paths


def _xml(image_id: str, size: tuple[int, int], objects) -> str:
    objs = "".join(
        f"\t<object>\n\t\t<name>{c}</name>\n\t\t<pose>Unspecified</pose>\n"
        f"\t\t<truncated>{int(t)}</truncated>\n\t\t<difficult>0</difficult>\n"
        f"\t\t<bndbox>\n\t\t\t<xmin>{b[0]}</xmin>\n\t\t\t<ymin>{b[1]}</ymin>\n"
        f"\t\t\t<xmax>{b[2]}</xmax>\n\t\t\t<ymax>{b[3]}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        for c, b, t in objects
    )
    return (
        f"<annotation>\n\t<folder>VOC2012</folder>\n\t<filename>{image_id}.jpg</filename>\n"
        f"\t<size>\n\t\t<width>{size[0]}</width>\n\t\t<height>{size[1]}</height>\n"
        f"\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n{objs}</annotation>\n"
    )


def _variant(im: Image.Image, objects, crop: tuple[float, float, float, float], flip: bool):
    """Crop (fractions x0, y0, x1, y1), optionally mirror, scale to MAX_SIDE; boxes follow."""
    w, h = im.size
    x0, y0, x1, y1 = round(crop[0] * w), round(crop[1] * h), round(crop[2] * w), round(crop[3] * h)
    out = im.crop((x0, y0, x1, y1))
    cw, ch = out.size
    scale = min(1.0, MAX_SIDE / max(cw, ch))
    out = out.resize((max(1, round(cw * scale)), max(1, round(ch * scale))), Image.BILINEAR)
    if flip:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    W, H = out.size
    boxes = []
    for cls, (bx0, by0, bx1, by1), trunc in objects:
        # 1-based inclusive -> pixel edges, crop, clip
        ex0, ey0, ex1, ey1 = bx0 - 1 - x0, by0 - 1 - y0, bx1 - x0, by1 - y0
        area = (ex1 - ex0) * (ey1 - ey0)
        cx0, cy0, cx1, cy1 = max(ex0, 0), max(ey0, 0), min(ex1, cw), min(ey1, ch)
        if cx1 <= cx0 or cy1 <= cy0 or (cx1 - cx0) * (cy1 - cy0) < 0.5 * area:
            continue
        cut = (cx0, cy0, cx1, cy1) != (ex0, ey0, ex1, ey1)
        sx0, sy0, sx1, sy1 = cx0 * scale, cy0 * scale, cx1 * scale, cy1 * scale
        if flip:
            sx0, sx1 = W - sx1, W - sx0
        box = (
            max(1, round(sx0) + 1),
            max(1, round(sy0) + 1),
            min(W, round(sx1)),
            min(H, round(sy1)),
        )
        if box[2] > box[0] and box[3] > box[1]:
            boxes.append((cls, box, trunc or cut))
    return out, boxes


VARIANTS = {  # suffix -> (split, crop, flip)
    "a": ("train", (0.0, 0.0, 1.0, 1.0), False),
    "b": ("train", (0.1, 0.1, 0.9, 0.9), False),
    "c": ("val", (0.0, 0.0, 1.0, 1.0), True),
    "d": ("val", (0.0, 0.05, 0.85, 1.0), True),
}


def write_real_photos(root: Path) -> Path:
    """Write ``root/VOCdevkit/VOC2012`` (atomically); return that folder."""
    year = Path(root) / "VOCdevkit" / "VOC2012"
    paths = photo_paths()
    splits: dict[str, list[str]] = {"train": [], "val": []}
    with atomic_path(year) as tmp:
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        for k, (name, objects) in enumerate(ANNOTATIONS.items()):
            im = Image.open(paths[name]).convert("RGB")
            for suffix, (split, crop, flip) in VARIANTS.items():
                image_id = f"2026_{k:04d}{suffix}"
                out, boxes = _variant(im, objects, crop, flip)
                out.save(tmp / "JPEGImages" / f"{image_id}.jpg", quality=92)
                (tmp / "Annotations" / f"{image_id}.xml").write_text(
                    _xml(image_id, out.size, boxes)
                )
                splits[split].append(image_id)
        for split, ids in {**splits, "trainval": splits["train"] + splits["val"]}.items():
            (tmp / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    log.info("real photos: %d train, %d val images in %s", len(splits["train"]),
             len(splits["val"]), year)  # fmt: skip
    return year


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", nargs="?", default="data/real", help="writes ROOT/VOCdevkit/VOC2012")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    write_real_photos(Path(args.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
