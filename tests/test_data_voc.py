"""The VOC reader on hand-written VOC XML and images, including every bad case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import build
from pipeline.data.voc import (
    VOC_CLASSES,
    VOCDataset,
    check_image,
    dataset_dir,
    load_rgb,
    open_split,
    parse_annotation,
    to_voc_corners,
)
from pipeline.errors import DataError, SkipPolicy, TooManySkipped
from pipeline.params import Params

W, H = 40, 30


def obj_xml(name: str, box, difficult=0, truncated=0, inner: str = "") -> str:
    xmin, ymin, xmax, ymax = box
    return (
        f"<object><name>{name}</name><pose>Left</pose><truncated>{truncated}</truncated>"
        f"<difficult>{difficult}</difficult>{inner}<bndbox><xmin>{xmin}</xmin>"
        f"<ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
    )


def ann_xml(objects: list[str], width=W, height=H) -> str:
    return (
        "<annotation><folder>VOC2012</folder><filename>x.jpg</filename>"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
        f"<segmented>0</segmented>{''.join(objects)}</annotation>"
    )


PERSON_WITH_PARTS = obj_xml(
    "person",
    (2, 3, 30, 28),
    inner=(
        "<part><name>head</name><bndbox><xmin>99</xmin><ymin>99</ymin><xmax>1</xmax>"
        "<ymax>1</ymax></bndbox></part><part><name>hand</name><bndbox><xmin>5</xmin>"
        "<ymin>5</ymin><xmax>6</xmax><ymax>6</ymax></bndbox></part>"
        "<actions><jumping>1</jumping><other>0</other></actions>"
    ),
)


def write_xml(tmp_path: Path, text: str, name: str = "a.xml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def save_image(path: Path, mode: str = "RGB", fmt: str = "JPEG", size=(W, H)) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    if mode == "L":
        im = im.convert("L")
    elif mode == "CMYK":
        im = im.convert("CMYK")
    elif mode == "RGBA":
        im = im.convert("RGBA")
    elif mode == "P":
        im = im.convert("P")
    elif mode == "I;16":
        im = Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257)
    im.save(path, format=fmt)


def make_voc(
    root: Path,
    name: str,
    items: dict[str, str],
    splits: dict[str, list[str]],
    images: dict[str, str | None] | None = None,
) -> Path:
    """``root/<name>`` with the given annotation texts; images RGB JPEG unless told."""
    year = root / name
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (year / sub).mkdir(parents=True, exist_ok=True)
    images = images or {}
    for image_id, text in items.items():
        (year / "Annotations" / f"{image_id}.xml").write_text(text)
        kind = images.get(image_id, "RGB")
        if kind is not None:
            save_image(year / "JPEGImages" / f"{image_id}.jpg", mode=kind)
    for split, ids in splits.items():
        (year / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return year


# ----------------------------------------------------------------------------- parsing


def test_parse_converts_corners_and_flags(tmp_path):
    xml = write_xml(
        tmp_path,
        ann_xml(
            [obj_xml("dog", (1, 1, 40, 30), difficult=1), obj_xml("cat", (5, 6, 10, 12), 0, 1)]
        ),
    )
    width, height, objs = parse_annotation(xml, VOC_CLASSES)
    assert (width, height) == (W, H)
    assert objs[0].name == "dog" and objs[0].box == (0.0, 0.0, 40.0, 30.0) and objs[0].difficult
    assert objs[1].box == (4.0, 5.0, 10.0, 12.0) and objs[1].truncated and not objs[1].difficult
    assert to_voc_corners(objs[1].box) == (5, 6, 10, 12)


def test_parse_float_coordinates(tmp_path):
    xml = write_xml(tmp_path, ann_xml([obj_xml("cat", ("4.5", "6.0", "20.25", "29.9"))]))
    _, _, objs = parse_annotation(xml, VOC_CLASSES)
    assert objs[0].box == pytest.approx((3.5, 5.0, 20.25, 29.9))


def test_parse_ignores_part_children_and_actions(tmp_path):
    # the parts carry their own names and (here inverted, outside) boxes: they must not count
    xml = write_xml(tmp_path, ann_xml([PERSON_WITH_PARTS, obj_xml("horse", (3, 4, 9, 9))]))
    _, _, objs = parse_annotation(xml, VOC_CLASSES)
    assert [o.name for o in objs] == ["person", "horse"]
    assert objs[0].box == (1.0, 2.0, 30.0, 28.0)


def test_parse_clips_a_box_off_by_one_pixel(tmp_path):
    xml = write_xml(tmp_path, ann_xml([obj_xml("cat", (0, 0, 41, 31))]))  # 0-based corners
    _, _, objs = parse_annotation(xml, VOC_CLASSES)
    assert objs[0].box == (0.0, 0.0, float(W), float(H))


BAD_XML = {
    "malformed": ("<annotation><size><width>4", "malformed XML"),
    "wrong root": ("<foo><size><width>4</width></size></foo>", "root element is <foo>"),
    "no size": ("<annotation></annotation>", "missing <size>"),
    "zero size": (ann_xml([], width=0), "not positive"),
    "not a number": (ann_xml([obj_xml("cat", ("a", 2, 3, 4))]), "<xmin> is not a number"),
    "nan": (ann_xml([obj_xml("cat", ("nan", 2, 3, 4))]), "not a finite number"),
    "no name": (ann_xml(["<object><bndbox></bndbox></object>"]), "missing <name>"),
    "no bndbox": (ann_xml(["<object><name>cat</name></object>"]), "missing <bndbox>"),
    "unknown class": (ann_xml([obj_xml("unicorn", (1, 1, 5, 5))]), "unknown class 'unicorn'"),
    "zero area": (ann_xml([obj_xml("cat", (5, 5, 5, 9))]), "zero-area box"),
    "zero area y": (ann_xml([obj_xml("cat", (5, 7, 9, 7))]), "zero-area box"),
    "inverted x": (ann_xml([obj_xml("cat", (10, 5, 4, 9))]), "inverted corners"),
    "inverted y": (ann_xml([obj_xml("cat", (4, 9, 10, 5))]), "inverted corners"),
    "outside right": (ann_xml([obj_xml("cat", (4, 5, 45, 9))]), "lies outside the 40x30 image"),
    "outside top": (ann_xml([obj_xml("cat", (4, -3, 10, 9))]), "lies outside"),
}


@pytest.mark.parametrize("case", sorted(BAD_XML))
def test_parse_bad_annotation_names_file_and_problem(tmp_path, case):
    text, message = BAD_XML[case]
    xml = write_xml(tmp_path, text, name=f"{case.replace(' ', '_')}.xml")
    with pytest.raises(DataError) as err:
        parse_annotation(xml, VOC_CLASSES)
    assert str(xml) in str(err.value)
    assert message in str(err.value)


def test_missing_annotation(tmp_path):
    with pytest.raises(DataError, match="annotation file not found"):
        parse_annotation(tmp_path / "nope.xml", VOC_CLASSES)


# ----------------------------------------------------------------------------- images


@pytest.mark.parametrize(
    "mode, fmt", [("L", "JPEG"), ("CMYK", "JPEG"), ("RGBA", "PNG"), ("P", "PNG"), ("I;16", "PNG")]
)
def test_load_rgb_converts_modes_and_reads_png_named_jpg(tmp_path, mode, fmt):
    path = tmp_path / "x.jpg"  # the name lies for PNGs: the content decides
    save_image(path, mode=mode, fmt=fmt)
    arr = load_rgb(path)
    assert arr.shape == (H, W, 3) and arr.dtype == np.uint8
    assert arr.std() > 10  # real content, not a blank conversion
    if mode in ("L", "I;16"):
        assert np.array_equal(arr[..., 0], arr[..., 2])


def test_load_rgb_bad_images(tmp_path):
    with pytest.raises(DataError, match="image file not found") as err:
        load_rgb(tmp_path / "missing.jpg")
    assert err.value.kind == "missing_image"
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all" * 10)
    with pytest.raises(DataError, match="unreadable or corrupt image") as err:
        load_rgb(junk)
    assert str(junk) in str(err.value)
    good = tmp_path / "good.jpg"
    save_image(good)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:200])  # a truncated JPEG
    with pytest.raises(DataError, match="corrupt") as err:
        load_rgb(cut)
    assert err.value.kind == "corrupt_image"
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="corrupt"):
        load_rgb(empty)


def test_check_image_size_mismatch(tmp_path):
    path = tmp_path / "x.jpg"
    save_image(path, size=(20, 10))
    with pytest.raises(DataError, match="image is 20x10 but its annotation says 40x30"):
        check_image(path, W, H)


# ----------------------------------------------------------------------------- datasets

GOOD = ann_xml([obj_xml("cat", (2, 2, 20, 20)), obj_xml("dog", (5, 5, 9, 9), difficult=1)])


def bad_voc(tmp_path: Path) -> Path:
    """Two good images and one of each bad kind, all listed in ``train``."""
    items = {
        "good1": GOOD,
        "good2": ann_xml([PERSON_WITH_PARTS]),
        "noimage": GOOD,
        "corrupt": GOOD,
        "badxml": "<annotation><size>",
        "zeroarea": ann_xml([obj_xml("cat", (3, 3, 3, 8))]),
        "inverted": ann_xml([obj_xml("cat", (9, 3, 3, 8))]),
        "outside": ann_xml([obj_xml("cat", (3, 3, 80, 8))]),
        "unknown": ann_xml([obj_xml("zebra", (3, 3, 8, 8))]),
    }
    year = make_voc(tmp_path, "VOC2012", items, {"train": list(items)}, images={"noimage": None})
    (year / "JPEGImages" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return year


def test_dataset_skips_and_counts_every_bad_kind(tmp_path):
    year = bad_voc(tmp_path)
    policy = SkipPolicy(on_error="skip", max_skip_fraction=0.9)
    ds = VOCDataset(year, "train", policy=policy)
    assert ds.ids == ["good1", "good2"]
    assert policy.skipped == 7
    assert policy.reasons == {
        "missing_image": 1,
        "corrupt_image": 1,
        "malformed_xml": 1,
        "bad_box": 3,
        "unknown_class": 1,
    }
    assert policy.metrics()["skipped"] == 7
    assert ds.by_id("good1").boxes().shape == (2, 4)
    assert ds.by_id("good1").boxes(include_difficult=False).tolist() == [[1, 1, 20, 20]]


def test_dataset_fails_above_the_skip_threshold(tmp_path):
    year = bad_voc(tmp_path)
    with pytest.raises(TooManySkipped, match="skipped 7 of 9"):
        VOCDataset(year, "train", policy=SkipPolicy(on_error="skip", max_skip_fraction=0.5))


def test_dataset_fail_policy_raises_the_first_error(tmp_path):
    year = bad_voc(tmp_path)
    with pytest.raises(DataError, match=r"noimage\.jpg: image file not found"):
        VOCDataset(year, "train", policy=SkipPolicy(on_error="fail"))


def test_missing_split_and_folder(tmp_path):
    year = make_voc(tmp_path, "VOC2012", {"a": GOOD}, {"train": ["a"]})
    with pytest.raises(DataError, match=r"split 'val' not found; available: \['train'\]"):
        VOCDataset(year, "val")
    with pytest.raises(DataError, match="dataset folder not found"):
        VOCDataset(tmp_path / "VOC2099", "train")


def test_image_labels_from_files_and_derived(tmp_path):
    items = {
        "a": ann_xml([obj_xml("cat", (2, 2, 20, 20))]),
        "b": ann_xml([obj_xml("cat", (2, 2, 20, 20), difficult=1)]),
        "c": ann_xml([obj_xml("dog", (2, 2, 20, 20))]),
    }
    year = make_voc(tmp_path, "VOC2012", items, {"train": ["a", "b", "c"]})
    ds = VOCDataset(year, "train")
    derived = ds.image_labels()
    cat, dog = VOC_CLASSES.index("cat"), VOC_CLASSES.index("dog")
    assert derived[:, cat].tolist() == [1, 0, -1]
    assert derived[:, dog].tolist() == [-1, -1, 1]
    # VOC's own {class}_{split}.txt files win when present ("id  1" with two spaces too)
    (year / "ImageSets" / "Main" / "cat_train.txt").write_text("a  1\nb  0\nc -1\n")
    assert ds.image_labels()[:, cat].tolist() == [1, 0, -1]
    (year / "ImageSets" / "Main" / "cat_train.txt").write_text("a yes\n")
    with pytest.raises(DataError, match=r"cat_train\.txt: bad line"):
        ds.image_labels()


def test_image_modes_inside_a_dataset(tmp_path):
    items = {k: GOOD for k in ("gray", "cmyk", "rgba", "rgb")}
    year = make_voc(tmp_path, "VOC2012", items, {"val": list(items)}, images={})
    save_image(year / "JPEGImages" / "gray.jpg", mode="L")
    save_image(year / "JPEGImages" / "cmyk.jpg", mode="CMYK")
    save_image(year / "JPEGImages" / "rgba.jpg", mode="RGBA", fmt="PNG")
    ds = VOCDataset(year, "val")
    assert len(ds) == 4
    assert all(ds.load_image(im).shape == (H, W, 3) for im in ds)


def voc_params(tmp_path: Path, dataset: str, **data) -> Params:
    return build(
        Params,
        {"dataset": dataset, "data": {"voc_root": str(tmp_path / "VOCdevkit"), **data}},
    )


def test_voc2007_trainval_and_separate_voctest_folder(tmp_path):
    make_voc(tmp_path / "VOCdevkit", "VOC2007", {"a": GOOD, "b": GOOD}, {"trainval": ["a", "b"]})
    # VOCtest_06-Nov-2007.tar unpacks to VOCtest/VOCdevkit/VOC2007
    make_voc(tmp_path / "VOCtest" / "VOCdevkit", "VOC2007", {"t": GOOD}, {"test": ["t"]})
    params = voc_params(tmp_path, "voc2007", voc2007_test_root=str(tmp_path / "VOCtest"))
    assert open_split(params.dataset_ref, "trainval").ids == ["a", "b"]
    test = open_split(params.dataset_ref, "test")
    assert test.ids == ["t"] and test.root == tmp_path / "VOCtest" / "VOCdevkit" / "VOC2007"
    # the root may also name the VOCdevkit itself
    params = voc_params(
        tmp_path, "voc2007", voc2007_test_root=str(tmp_path / "VOCtest" / "VOCdevkit")
    )
    assert open_split(params.dataset_ref, "test").ids == ["t"]
    # without a separate root, test is looked up beside trainval
    with pytest.raises(DataError, match="split 'test' not found"):
        open_split(voc_params(tmp_path, "voc2007").dataset_ref, "test")


def test_voc2012_train_val_with_parts(tmp_path):
    items = {"2012_000001": ann_xml([PERSON_WITH_PARTS]), "2012_000002": GOOD}
    make_voc(
        tmp_path / "VOCdevkit", "VOC2012", items, {"train": ["2012_000001"], "val": ["2012_000002"]}
    )
    params = voc_params(tmp_path, "voc2012")
    train, val = open_split(params.dataset_ref, "train"), open_split(params.dataset_ref, "val")
    assert [o.name for o in train[0].objects] == ["person"]
    assert val.ids == ["2012_000002"]
    assert dataset_dir("voc2012", params.data, params.scenes, "val") == (
        tmp_path / "VOCdevkit" / "VOC2012"
    )


def test_open_split_policy_from_params(tmp_path):
    year = bad_voc(tmp_path / "VOCdevkit")
    assert year.name == "VOC2012"
    params = voc_params(tmp_path, "voc2012", on_error="skip", max_skip_fraction=0.8)
    ds = open_split(params.dataset_ref, "train", stage="proposals")
    assert len(ds) == 2 and ds.policy.skipped == 7
    with pytest.raises(DataError):
        open_split(voc_params(tmp_path, "voc2012", on_error="fail").dataset_ref, "train")
    with pytest.raises(TooManySkipped, match="proposals: skipped"):
        open_split(voc_params(tmp_path, "voc2012").dataset_ref, "train", stage="proposals")
