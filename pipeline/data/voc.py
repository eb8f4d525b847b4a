"""Reader for PASCAL VOC-layout datasets: the embedded scenes, VOC2007 and VOC2012.

Box convention of the whole project: ``(x1, y1, x2, y2)`` float32 in continuous pixel
coordinates with the origin at the top-left corner of the top-left pixel, so a box
covers ``x1 <= x < x2``. VOC XML stores 1-based inclusive pixel corners
``(xmin, ymin, xmax, ymax)``; they convert as ``x1 = xmin - 1, y1 = ymin - 1,
x2 = xmax, y2 = ymax`` (width ``xmax - xmin + 1``), and back with :func:`to_voc_corners`.
This is the convention of ``torchvision.ops`` (RoIAlign, box_iou) up to the +1 width.
"""

from __future__ import annotations

import copy
import logging
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.config import ConfigError
from pipeline.data.config import DataConfig, ScenesConfig
from pipeline.errors import DataError, SkipPolicy

log = logging.getLogger(__name__)

# A box may poke out of the image by this many pixels (0-based corners, rounding in
# some real VOC files); it is clipped. Further out it is an error.
OUTSIDE_TOLERANCE = 1.0

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


@dataclass(frozen=True)
class VOCObject:
    name: str
    box: tuple[float, float, float, float]  # (x1, y1, x2, y2), project convention
    difficult: bool = False
    truncated: bool = False


@dataclass(frozen=True)
class VOCImage:
    id: str
    path: Path  # the JPEG
    annotation: Path  # the XML
    width: int
    height: int
    objects: tuple[VOCObject, ...]

    def boxes(self, include_difficult: bool = True) -> np.ndarray:
        """(N, 4) float32 boxes in the project convention."""
        objs = [o for o in self.objects if include_difficult or not o.difficult]
        return np.array([o.box for o in objs], dtype=np.float32).reshape(-1, 4)


def to_voc_corners(box: Sequence[float]) -> tuple[int, int, int, int]:
    """Project-convention box -> VOC 1-based inclusive integer corners."""
    x1, y1, x2, y2 = box
    return round(x1) + 1, round(y1) + 1, round(x2), round(y2)


def _text(node: ET.Element, tag: str, xml: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DataError(xml, f"missing <{tag}>", kind="malformed_xml")
    return child.text.strip()


def _number(node: ET.Element, tag: str, xml: Path) -> float:
    raw = _text(node, tag, xml)
    try:
        value = float(raw)
    except ValueError:
        raise DataError(xml, f"<{tag}> is not a number: {raw!r}", kind="malformed_xml") from None
    if not math.isfinite(value):
        raise DataError(xml, f"<{tag}> is not a finite number: {raw!r}", kind="malformed_xml")
    return value


def _flag(node: ET.Element, tag: str) -> bool:
    child = node.find(tag)
    if child is None or child.text is None:
        return False
    try:
        return bool(int(float(child.text.strip())))
    except ValueError:
        return False


def parse_annotation(
    xml: Path, classes: Sequence[str], image_path: Path | None = None
) -> tuple[int, int, tuple[VOCObject, ...]]:
    """Parse one VOC XML file into (width, height, objects); raise :class:`DataError`.

    Checks: well-formed XML with an ``<annotation>`` root, a ``size`` with positive
    width and height, known class names, finite corners with ``xmin < xmax`` and
    ``ymin < ymax`` (equal corners are a zero-area box, reversed ones inverted), inside
    the image up to :data:`OUTSIDE_TOLERANCE` pixels (then clipped). ``part`` children
    of objects (VOC2012 person layout) and ``actions`` are ignored, only the object's
    own ``name`` and ``bndbox`` count; float coordinates (``273.5``) are accepted.
    """
    try:
        root = ET.parse(xml).getroot()
    except FileNotFoundError:
        raise DataError(xml, "annotation file not found", kind="missing_annotation") from None
    except ET.ParseError as err:
        raise DataError(xml, f"malformed XML: {err}", kind="malformed_xml") from None
    if root.tag != "annotation":
        raise DataError(
            xml, f"root element is <{root.tag}>; allowed: <annotation>", kind="malformed_xml"
        )
    size = root.find("size")
    if size is None:
        raise DataError(xml, "missing <size>", kind="malformed_xml")
    width, height = int(_number(size, "width", xml)), int(_number(size, "height", xml))
    if width <= 0 or height <= 0:
        raise DataError(xml, f"image size {width}x{height} is not positive", kind="bad_size")
    objects = []
    for k, obj in enumerate(root.findall("object")):
        name = _text(obj, "name", xml)
        if name not in classes:
            raise DataError(
                xml,
                f"object {k}: unknown class {name!r}; allowed: {', '.join(classes)}",
                kind="unknown_class",
            )
        bb = obj.find("bndbox")
        if bb is None:
            raise DataError(xml, f"object {k} ({name}): missing <bndbox>", kind="malformed_xml")
        xmin, ymin = _number(bb, "xmin", xml), _number(bb, "ymin", xml)
        xmax, ymax = _number(bb, "xmax", xml), _number(bb, "ymax", xml)
        if xmax < xmin or ymax < ymin:
            raise DataError(
                xml,
                f"object {k} ({name}): inverted corners xmin={xmin} xmax={xmax} "
                f"ymin={ymin} ymax={ymax}; allowed: xmin <= xmax and ymin <= ymax",
                kind="bad_box",
            )
        if xmax == xmin or ymax == ymin:
            raise DataError(
                xml,
                f"object {k} ({name}): zero-area box xmin={xmin} xmax={xmax} ymin={ymin} "
                f"ymax={ymax} (a degenerate line or point); allowed: xmin < xmax and ymin < ymax",
                kind="bad_box",
            )
        box = [xmin - 1.0, ymin - 1.0, xmax, ymax]
        over = max(-box[0], -box[1], box[2] - width, box[3] - height)
        if over > OUTSIDE_TOLERANCE:
            raise DataError(
                xml,
                f"object {k} ({name}): box {xmin},{ymin},{xmax},{ymax} lies outside the "
                f"{width}x{height} image; allowed: 1 <= xmin, xmax <= width, 1 <= ymin, "
                f"ymax <= height",
                kind="bad_box",
            )
        if over > 0:  # off by at most a pixel (0-based corners in some files): clip
            box = [max(box[0], 0.0), max(box[1], 0.0), min(box[2], width), min(box[3], height)]
        objects.append(
            VOCObject(
                name=name,
                box=tuple(float(v) for v in box),  # type: ignore[arg-type]
                difficult=_flag(obj, "difficult"),
                truncated=_flag(obj, "truncated"),
            )
        )
    return width, height, tuple(objects)


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image to an (H, W, 3) uint8 RGB array.

    The format is read from the content, not the name (a PNG saved as ``.jpg`` works).
    Grayscale, palette, CMYK and YCbCr convert to RGB; an alpha channel is dropped;
    16-bit and 32-bit grayscale are scaled to 8 bits. EXIF orientation is not applied
    (as in VOC's own tools and torchvision's VOCDetection: boxes refer to stored pixels).
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                arr = np.asarray(im, dtype=np.float64)
                top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
                gray = np.clip(arr / top * 255 + 0.5, 0, 255).astype(np.uint8)  # (H, W)
                return np.repeat(gray[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DataError(path, "image file not found", kind="missing_image") from None
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
    ) as err:
        raise DataError(path, f"unreadable or corrupt image: {err}", kind="corrupt_image") from None


def check_image(path: Path, width: int, height: int) -> None:
    """Cheap integrity check: the file exists, decodes, and has the annotated size."""
    arr = load_rgb(path)
    if arr.shape[0] != height or arr.shape[1] != width:
        raise DataError(
            path,
            f"image is {arr.shape[1]}x{arr.shape[0]} but its annotation says {width}x{height}",
            kind="size_mismatch",
        )


def read_split_ids(imagesets: Path, split: str) -> list[str]:
    f = imagesets / "Main" / f"{split}.txt"
    if not f.is_file():
        available = sorted(p.stem for p in (imagesets / "Main").glob("*.txt") if "_" not in p.stem)
        raise DataError(
            f, f"split {split!r} not found; available: {available}", kind="missing_split"
        )
    ids = [line.split()[0] for line in f.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f, f"split {split!r} lists no images", kind="empty_split")
    return ids


class VOCDataset:
    """One split of a VOC-layout dataset, parsed and checked up front.

    ``year_dir`` is the ``VOCdevkit/<name>`` folder (``JPEGImages``, ``Annotations``,
    ``ImageSets``). Bad images or annotations raise :class:`DataError`, or with a
    ``policy`` in skip mode are counted and left out; ``check_images`` decodes every
    image once to catch corrupt files before any stage work.
    """

    def __init__(
        self,
        year_dir: str | Path,
        split: str,
        classes: Sequence[str] = VOC_CLASSES,
        policy: SkipPolicy | None = None,
        check_images: bool = True,
    ):
        self.root = Path(year_dir)
        self.split = split
        self.classes = tuple(classes)
        self.policy = policy or SkipPolicy(on_error="fail")
        if not self.root.is_dir():
            raise DataError(self.root, "dataset folder not found", kind="missing_dataset")
        self.ids_listed = read_split_ids(self.root / "ImageSets", split)
        images = []
        for image_id in self.ids_listed:
            try:
                images.append(self._load(image_id, check_images))
            except DataError as err:
                self.policy.handle(err)
        self.policy.check(len(self.ids_listed))
        self.images: list[VOCImage] = images
        self._index = {im.id: i for i, im in enumerate(images)}

    def _load(self, image_id: str, check_images: bool) -> VOCImage:
        xml = self.root / "Annotations" / f"{image_id}.xml"
        jpg = self.root / "JPEGImages" / f"{image_id}.jpg"
        width, height, objects = parse_annotation(xml, self.classes)
        if not jpg.is_file():
            raise DataError(jpg, "image file not found", kind="missing_image")
        if check_images:
            check_image(jpg, width, height)
        return VOCImage(image_id, jpg, xml, width, height, objects)

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[VOCImage]:
        return iter(self.images)

    def __getitem__(self, i: int) -> VOCImage:
        return self.images[i]

    def by_id(self, image_id: str) -> VOCImage:
        return self.images[self._index[image_id]]

    @property
    def ids(self) -> list[str]:
        return [im.id for im in self.images]

    def subset(self, indices: Sequence[int]) -> VOCDataset:
        """A view of the images at ``indices`` (in that order), same split, classes and
        skip policy; the listed ids stay those of the whole split."""
        sub = copy.copy(self)
        sub.images = [self.images[int(i)] for i in indices]
        sub._index = {im.id: k for k, im in enumerate(sub.images)}
        return sub

    def load_image(self, image: VOCImage) -> np.ndarray:
        return load_rgb(image.path)

    def image_labels(self) -> np.ndarray:
        """(n_images, n_classes) int8 with VOC meaning: 1 present, -1 absent, 0 difficult only.

        Read from ``ImageSets/Main/{class}_{split}.txt`` when present, else derived from
        the annotations with the same rule.
        """
        labels = np.full((len(self.images), len(self.classes)), -1, dtype=np.int8)
        main = self.root / "ImageSets" / "Main"
        for c, name in enumerate(self.classes):
            f = main / f"{name}_{self.split}.txt"
            if f.is_file():
                table = {}
                for line in f.read_text().splitlines():
                    parts = line.split()
                    if len(parts) != 2 or parts[1] not in ("1", "-1", "0"):
                        if line.strip():
                            raise DataError(
                                f, f"bad line {line!r}; expected 'id 1|-1|0'", kind="bad_imageset"
                            )
                        continue
                    table[parts[0]] = int(parts[1])
                for i, im in enumerate(self.images):
                    labels[i, c] = table.get(im.id, -1)
            else:
                for i, im in enumerate(self.images):
                    objs = [o for o in im.objects if o.name == name]
                    if any(not o.difficult for o in objs):
                        labels[i, c] = 1
                    elif objs:
                        labels[i, c] = 0
        return labels


def dataset_dir(dataset: str, data_cfg, scenes_cfg, split: str) -> Path:
    """The ``VOCdevkit/<name>`` folder for the top-level ``dataset`` switch and a split."""
    if dataset == "scenes":
        return Path(data_cfg.scenes_root) / "VOCdevkit" / scenes_cfg.name
    if dataset == "voc2012":
        return Path(data_cfg.voc_root) / "VOC2012"
    if dataset == "voc2007":
        if split == "test" and data_cfg.voc2007_test_root is not None:
            # VOCtest_06-Nov-2007.tar unpacks to VOCdevkit/VOC2007: accept either folder.
            root = Path(data_cfg.voc2007_test_root)
            for candidate in (root / "VOC2007", root / "VOCdevkit" / "VOC2007"):
                if candidate.is_dir():
                    return candidate
            return root / "VOC2007"
        return Path(data_cfg.voc_root) / "VOC2007"
    raise ConfigError(
        f"dataset: {dataset!r} is not a valid choice; allowed: scenes, voc2007, voc2012"
    )


def dataset_classes(dataset: str, scenes_cfg) -> tuple[str, ...]:
    return tuple(scenes_cfg.classes) if dataset == "scenes" else VOC_CLASSES


@dataclass(frozen=True)
class DatasetRef:
    """Which VOC-layout dataset a stage reads: the top-level ``dataset`` switch with the
    ``data`` and ``scenes`` sections that locate it (``Params.dataset_ref``)."""

    name: str
    data: DataConfig
    scenes: ScenesConfig

    def dir(self, split: str) -> Path:
        return dataset_dir(self.name, self.data, self.scenes, split)

    @property
    def classes(self) -> tuple[str, ...]:
        return dataset_classes(self.name, self.scenes)


def open_split(
    ref: DatasetRef, split: str, check_images: bool = True, stage: str = ""
) -> VOCDataset:
    """Open ``split`` of the dataset ``ref`` with the stage's skip policy (``data.*``)."""
    policy = SkipPolicy(
        on_error=ref.data.on_error,
        max_skip_fraction=ref.data.max_skip_fraction,
        stage=stage,
    )
    return VOCDataset(
        ref.dir(split), split, classes=ref.classes, policy=policy, check_images=check_images
    )
