"""The dataset on disk: PASCAL VOC files, the atomic write and the DVC stage.

Owns the annotation XML, the split ids and ImageSets files, :func:`generate_scenes`
(renders every image and writes ``root/VOCdevkit/<name>/`` atomically, returning the
metrics) and :func:`run_scenes`, the function the runner calls for DVC stage ``scenes``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline.data.config import ScenesConfig
from pipeline.data.scenes.layouts import SCENE_TYPES
from pipeline.data.scenes.render import SceneObject, render_scene
from pipeline.io import atomic_path
from pipeline.provenance import code_version

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "trainval", "test", "unlabelled")


def annotation_xml(
    image_id: str, folder: str, size: int, objects: list[SceneObject], scene: str
) -> str:
    """A PASCAL VOC annotation (deterministic text, 1-based inclusive integer corners)."""
    objs = "".join(
        "\t<object>\n"
        f"\t\t<name>{o.name}</name>\n"
        "\t\t<pose>Unspecified</pose>\n"
        f"\t\t<truncated>{int(o.truncated)}</truncated>\n"
        f"\t\t<difficult>{int(o.difficult)}</difficult>\n"
        "\t\t<bndbox>\n"
        f"\t\t\t<xmin>{o.box[0]}</xmin>\n\t\t\t<ymin>{o.box[1]}</ymin>\n"
        f"\t\t\t<xmax>{o.box[2]}</xmax>\n\t\t\t<ymax>{o.box[3]}</ymax>\n"
        "\t\t</bndbox>\n"
        "\t</object>\n"
        for o in objects
    )
    return (
        "<annotation>\n"
        f"\t<folder>{folder}</folder>\n"
        f"\t<filename>{image_id}.jpg</filename>\n"
        "\t<source>\n\t\t<database>SCN generated scenes</database>\n"
        f"\t\t<annotation>{scene}</annotation>\n\t</source>\n"
        f"\t<size>\n\t\t<width>{size}</width>\n\t\t<height>{size}</height>\n"
        "\t\t<depth>3</depth>\n\t</size>\n"
        "\t<segmented>0</segmented>\n"
        f"{objs}"
        "</annotation>\n"
    )


def split_ids(cfg: ScenesConfig) -> dict[str, list[str]]:
    """Image ids of each split: train, then val, then test, then unlabelled (the extra
    pool for SCN's pairs; its annotations are written too, but only the ``bbox``
    proposal mechanism and ``diagnose``'s oracle read them); trainval = train + val.
    The ``unlabelled`` split is written only when ``n_unlabelled > 0``."""
    n = [cfg.n_train, cfg.n_val, cfg.n_test, cfg.n_unlabelled]
    ids = [f"{k:06d}" for k in range(sum(n))]
    edges = np.cumsum([0, *n])
    train, val, test, unlabelled = (ids[edges[k] : edges[k + 1]] for k in range(4))
    out = {"train": train, "val": val, "trainval": train + val, "test": test}
    if unlabelled:
        out["unlabelled"] = unlabelled
    return out


def _write_imagesets(main: Path, splits: dict[str, list[str]], labels: dict, classes) -> None:
    """``{split}.txt`` and VOC's ``{class}_{split}.txt`` (1 present, -1 absent, 0 difficult)."""
    for split, ids in splits.items():
        (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for c in classes:
            (main / f"{c}_{split}.txt").write_text(
                "".join(f"{i} {labels[i].get(c, -1):2d}\n" for i in ids)
            )


def _write_dataset(year: Path, cfg: ScenesConfig, show_progress: bool) -> dict:
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (year / sub).mkdir(parents=True, exist_ok=True)
    splits = split_ids(cfg)
    labels: dict[str, dict[str, int]] = {}
    per_class: Counter = Counter()
    difficult: Counter = Counter()
    scenes: Counter = Counter()
    n_truncated = 0
    all_ids = [i for name, ids in splits.items() if name != "trainval" for i in ids]
    for k, image_id in enumerate(tqdm(all_ids, desc="scenes", disable=not show_progress)):
        image, objects, scene, quality = render_scene(cfg, k)
        Image.fromarray(image).save(year / "JPEGImages" / f"{image_id}.jpg", quality=quality)
        (year / "Annotations" / f"{image_id}.xml").write_text(
            annotation_xml(image_id, cfg.name, cfg.image_size, objects, scene)
        )
        lab: dict[str, int] = {}
        for o in objects:
            per_class[o.name] += 1
            difficult[o.name] += int(o.difficult)
            n_truncated += int(o.truncated)
            lab[o.name] = 1 if not o.difficult else max(lab.get(o.name, 0), 0)
        labels[image_id] = lab
        scenes[scene] += 1
    _write_imagesets(year / "ImageSets" / "Main", splits, labels, cfg.classes)
    return {
        "images": {split: len(ids) for split, ids in splits.items()},
        "objects_per_class": {c: per_class[c] for c in cfg.classes},
        "difficult_per_class": {c: difficult[c] for c in cfg.classes},
        "objects": sum(per_class.values()),
        "difficult": sum(difficult.values()),
        "truncated": n_truncated,
        "scene_types": {t: scenes[t] for t in SCENE_TYPES},
    }


def generate_scenes(root: Path, cfg: ScenesConfig, show_progress: bool = False) -> dict:
    """Write ``root/VOCdevkit/<cfg.name>/`` atomically; return its metrics.

    The folder is built under a temporary name and renamed when complete, replacing
    an earlier one. Tiny configurations are fast (12 images of 128 px: well under a
    second), so tests can make their own datasets.
    """
    start = time.perf_counter()
    year = Path(root) / "VOCdevkit" / cfg.name
    with atomic_path(year) as tmp:
        metrics = _write_dataset(tmp, cfg, show_progress)
    metrics["path"] = str(year)
    metrics["generate_seconds"] = round(time.perf_counter() - start, 3)
    log.info(
        "scenes: %d images, %d objects (%d difficult) in %s, %.1fs",
        sum(len(v) for k, v in split_ids(cfg).items() if k != "trainval"),
        metrics["objects"],
        metrics["difficult"],
        year,
        metrics["generate_seconds"],
    )
    return metrics


def run_scenes(cfg: ScenesConfig, root: Path) -> dict:
    """DVC stage ``scenes``: generate the dataset under ``root`` (``data.scenes_root``)."""
    metrics = generate_scenes(root, cfg, show_progress=True)
    return {"code_version": code_version(), **metrics}
