"""SCN pairs from one's own unlabelled photographs (``data.scn_images``).

``data.scn_images`` is ``null`` (the SCN split ``data.scn_split`` of the VOC-layout
dataset), a folder searched recursively for ``.jpg``, ``.jpeg`` and ``.png`` files (any
case), or a text file listing image paths, one per line (relative to the list file's
folder, or absolute; blank lines and lines starting with ``#`` are ignored). The stages
that make and use the SCN pairs (``proposals``, ``pairs``, ``targets``, ``train``) then
read these images in place of ``data.scn_split``; their files keep the name of
``data.scn_split``. Evaluation stays on the VOC-layout dataset.

Order and ids: the images in sorted order of their path relative to the folder (the
list file: in the listed order), each with the id of that relative path with ``/``
replaced by ``__`` (``trips/2019/a.jpg`` -> ``trips__2019__a.jpg``; an absolute entry
outside the list file's folder keeps its whole path that way). Ids are unique (two
entries with the same id are refused) and do not depend on the machine, so the HDF5
caches keyed on them and every seeded draw per image are stable.

Bad files (missing, zero size, not a decodable image) are counted and named by the
stage's skip policy (``data.on_error``, ``data.max_skip_fraction``) as for VOC.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.config import ConfigError
from pipeline.data.voc import DatasetRef, VOCDataset, VOCImage, load_rgb, open_split
from pipeline.errors import DataError, SkipPolicy
from pipeline.provenance import sha256_file

log = logging.getLogger(__name__)

#: File name endings the folder search takes (compared lower-case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: ``proposal`` methods that need annotations, refused with ``data.scn_images``.
NEEDS_ANNOTATIONS = ("bbox",)


def image_id(relative: str) -> str:
    """The id of an image from its POSIX path relative to the folder or list file."""
    return relative.strip("/").replace("/", "__")


def list_images(source: str | Path) -> list[tuple[str, Path]]:
    """``(id, path)`` of every image of a folder (recursive, sorted) or a list file.

    Raises :class:`DataError` (not skipped: the whole source is wrong) when ``source``
    does not exist, finds no images, or gives two images the same id.
    """
    source = Path(source)
    if source.is_dir():
        found = [
            p
            for p in source.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or p.is_symlink())
        ]
        entries = sorted((p.relative_to(source).as_posix(), p) for p in found)
        where = f"folder (searched recursively for {', '.join(IMAGE_SUFFIXES)})"
    elif source.is_file():
        base = source.parent
        entries = []
        for line in source.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = Path(line)
            path = p if p.is_absolute() else base / p
            try:
                rel = Path(os.path.normpath(path)).relative_to(os.path.normpath(base))
                relative = rel.as_posix()
            except ValueError:  # an absolute path outside the list file's folder
                relative = Path(os.path.normpath(path)).as_posix()
            entries.append((relative, path))
        where = "list file"
    else:
        raise DataError(
            source,
            "data.scn_images: not found; allowed: null, a folder of JPEG/PNG images or a "
            "text file listing image paths",
            kind="missing_dataset",
        )
    if not entries:
        raise DataError(source, f"data.scn_images: the {where} holds no images", "empty_split")
    seen: dict[str, Path] = {}
    out = []
    for relative, path in entries:
        iid = image_id(relative)
        if iid in seen:
            raise DataError(
                path,
                f"data.scn_images: image id {iid!r} is also the id of {seen[iid]}; ids are the "
                "relative paths with '/' replaced by '__' and must be unique",
                kind="duplicate_id",
            )
        seen[iid] = path
        out.append((iid, path))
    return out


def image_size(path: Path, decode: bool) -> tuple[int, int]:
    """``(width, height)`` of an image file: decoded whole (``decode``, catches truncated
    and corrupt files) or from its header; :class:`DataError` naming the file."""
    if not path.is_file():
        raise DataError(path, "image file not found", kind="missing_image")
    if path.stat().st_size == 0:
        raise DataError(path, "image file is empty (0 bytes)", kind="empty_image")
    if decode:
        arr = load_rgb(path)  # (H, W, 3)
        return int(arr.shape[1]), int(arr.shape[0])
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception as err:  # PIL raises several types for a file that is no image
        raise DataError(path, f"unreadable or corrupt image: {err}", "corrupt_image") from None


class ImageFolderDataset(VOCDataset):
    """The images of ``data.scn_images`` as an unannotated split: every image without
    objects, ``classes`` empty; the interface of :class:`VOCDataset` that the proposal
    methods, the target cache and the train stage use."""

    annotated = False

    def __init__(
        self,
        source: str | Path,
        split: str,
        policy: SkipPolicy | None = None,
        check_images: bool = True,
    ):
        self.root = Path(source)
        self.split = split
        self.classes = ()
        self.policy = policy or SkipPolicy(on_error="fail")
        listed = list_images(self.root)
        self.ids_listed = [iid for iid, _ in listed]
        images = []
        for iid, path in listed:
            try:
                width, height = image_size(path, decode=check_images)
            except DataError as err:
                self.policy.handle(err)
                continue
            images.append(VOCImage(iid, path, Path(), width, height, ()))
        self.policy.check(len(self.ids_listed))
        self.images = images
        self._index = {im.id: i for i, im in enumerate(images)}
        log.info(
            "data.scn_images %s: %d images listed, %d usable",
            self.root,
            len(self.ids_listed),
            len(images),
        )


def uses_images(ref: DatasetRef, split: str) -> bool:
    """Whether ``split`` is read from ``data.scn_images`` (it is set and ``split`` is the
    SCN split)."""
    return ref.data.scn_images is not None and split == ref.data.scn_split


def open_scn_split(
    ref: DatasetRef, split: str, check_images: bool = True, stage: str = ""
) -> VOCDataset:
    """``split`` as the SCN pair stages read it: the images of ``data.scn_images`` for the
    SCN split when that is set, else :func:`pipeline.data.voc.open_split`."""
    if not uses_images(ref, split):
        return open_split(ref, split, check_images=check_images, stage=stage)
    policy = SkipPolicy(
        on_error=ref.data.on_error, max_skip_fraction=ref.data.max_skip_fraction, stage=stage
    )
    return ImageFolderDataset(ref.data.scn_images, split, policy, check_images)


def refuse_unannotated(ref: DatasetRef, proposal: str) -> None:
    """A ConfigError when ``proposal`` needs annotations and ``data.scn_images`` has none."""
    if ref.data.scn_images is not None and proposal in NEEDS_ANNOTATIONS:
        raise ConfigError(
            f"proposal: {proposal!r} takes the ground-truth boxes as patches, and "
            f"data.scn_images ({ref.data.scn_images}) has no annotations; allowed with "
            "data.scn_images: edgebox, random, yolo (trained on the labelled data.scn_split)"
        )


# --------------------------------------------------------------------------- manifest


def manifest(ref: DatasetRef, datasets: Iterable[VOCDataset] = ()) -> dict[str, Any]:
    """The content of ``<paths.proposals>/scn_images.json``: ``data.scn_images`` and, when
    set, each usable image's id, byte count and SHA-256 and the ids of the skipped ones.

    Nothing in it depends on the machine or the time: it changes exactly when the images
    the SCN pairs come from change, so the stages that read it rerun then.
    """
    if ref.data.scn_images is None:
        return {"scn_images": None}
    ds = next((d for d in datasets if isinstance(d, ImageFolderDataset)), None)
    if ds is None:
        raise ValueError("manifest: data.scn_images is set but no ImageFolderDataset given")
    used = set(ds.ids)
    return {
        "scn_images": str(ref.data.scn_images),
        "split": ds.split,
        "images": [
            {"id": im.id, "bytes": im.path.stat().st_size, "sha256": sha256_file(im.path)}
            for im in ds.images
        ],
        "skipped": [iid for iid in ds.ids_listed if iid not in used],
    }


def check_scn_images(ref: DatasetRef, ds: VOCDataset, ids: Iterable[str], path: Path) -> None:
    """When ``ds`` holds the images of ``data.scn_images``: refuse those of ``ids`` that
    changed since the proposals stage hashed them into its manifest ``path``
    (:func:`manifest`), with a :class:`DataError` naming the image. A VOC split passes."""
    if getattr(ds, "annotated", True):
        return
    path = Path(path)
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(path, f"no readable manifest of data.scn_images ({err}); run the "
                        "proposals stage", kind="missing_manifest") from None  # fmt: skip
    if recorded.get("scn_images") != str(ref.data.scn_images):
        raise DataError(
            path,
            f"made for data.scn_images={recorded.get('scn_images')!r}, not "
            f"{str(ref.data.scn_images)!r}; run the proposals stage",
            kind="provenance_mismatch",
        )
    want = {e["id"]: e["sha256"] for e in recorded.get("images", [])}
    usable = set(ds.ids)
    for iid in dict.fromkeys(ids):
        if iid not in usable:
            continue  # not a usable image now: the reader names it
        im = ds.by_id(iid)
        if want.get(iid) != sha256_file(im.path):
            raise DataError(
                im.path,
                f"changed since the proposals stage hashed it into {path}; rerun from "
                "proposals (dvc repro -f proposals)",
                kind="changed_image",
            )
