"""tools/real_photos.py: a VOC-layout folder of the packaged real photographs."""

from __future__ import annotations

import pytest

from pipeline.data.voc import VOC_CLASSES, VOCDataset
from tools.real_photos import ANNOTATIONS, VARIANTS, write_real_photos


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_real_photos(tmp_path_factory.mktemp("real"))


def test_reads_back_with_the_voc_reader_without_skips(folder):
    ds = {s: VOCDataset(folder, s, classes=VOC_CLASSES) for s in ("train", "val")}
    assert [len(d.images) for d in ds.values()] == [8, 8]
    assert all(d.policy.metrics()["skipped"] == 0 for d in ds.values())
    names = {o.name for d in ds.values() for im in d.images for o in im.objects}
    assert names == {"person", "bus"}
    for d in ds.values():
        for im in d.images:
            assert max(im.width, im.height) <= 320
            for o in im.objects:
                x1, y1, x2, y2 = o.box
                assert 0 <= x1 < x2 <= im.width and 0 <= y1 < y2 <= im.height


def test_the_mirror_image_mirrors_every_box(folder):
    train = VOCDataset(folder, "train", classes=VOC_CLASSES)
    val = VOCDataset(folder, "val", classes=VOC_CLASSES)
    assert VARIANTS["a"][1] == VARIANTS["c"][1] and VARIANTS["c"][2]  # same crop, mirrored
    for k, (name, objects) in enumerate(ANNOTATIONS.items()):
        a, c = train.by_id(f"2026_{k:04d}a"), val.by_id(f"2026_{k:04d}c")
        assert len(a.objects) == len(c.objects) == len(objects), name
        for oa, oc in zip(a.objects, c.objects, strict=True):
            assert oa.name == oc.name
            assert abs(oc.box[0] - (a.width - oa.box[2])) <= 1
            assert abs(oc.box[2] - (a.width - oa.box[0])) <= 1
            assert oc.box[1] == oa.box[1] and oc.box[3] == oa.box[3]
