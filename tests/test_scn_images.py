"""data.scn_images: SCN pairs from a folder (or list) of unlabelled photographs, evaluation
on the VOC-layout dataset. End to end on the real photographs that ship inside installed
packages (tools/real_photos.py: scikit-learn's and ultralytics' sample images)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import pytest
import yaml
from PIL import Image

from pipeline.config import ConfigError
from pipeline.data.images import ImageFolderDataset, image_id, list_images
from pipeline.errors import DataError, SkipPolicy, TooManySkipped
from pipeline.params import load_params
from pipeline.proposals.store import read_proposals
from pipeline.runner import run_stage
from tools.dvc_repo import dvc, make_repo, tiny_params
from tools.real_photos import photo_paths

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
# Where each packaged photo goes in the folder: nested, so ids carry the relative path.
LAYOUT = {
    "bus.jpg": "street/bus.jpg",
    "zidane.jpg": "street/zidane.jpg",
    "china.jpg": "china.jpg",
    "flower.jpg": "garden/2019/flower.jpg",
}
PHOTO_IDS = sorted(image_id(rel) for rel in LAYOUT.values())
MAX_SIDE = 400  # copies scaled down to this longest side: EdgeBoxes stays quick


def write_photos(folder: Path, corrupt: bool = True) -> Path:
    """Copies of the packaged photographs under ``folder``, scaled to ``MAX_SIDE`` (the bus
    saved as PNG), plus a corrupt JPEG and a text file the search must ignore."""
    for name, src in photo_paths().items():
        dst = folder / LAYOUT[name]
        dst.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(src) as im:
            im.thumbnail((MAX_SIDE, MAX_SIDE))
            im.save(dst, format="PNG" if name == "bus.jpg" else "JPEG", quality=90)
    if corrupt:
        (folder / "street" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no JPEG")
    (folder / "README.txt").write_text("not an image, and not searched for")
    return folder


# --------------------------------------------------------------------------- listing


def test_a_folder_is_searched_recursively_in_sorted_order_with_path_ids(tmp_path):
    folder = write_photos(tmp_path / "photos")
    (folder / "UPPER.PNG").write_bytes((folder / "china.jpg").read_bytes())  # any case
    listed = list_images(folder)
    ids = [iid for iid, _ in listed]
    assert ids == sorted([*PHOTO_IDS, "street__broken.jpg", "UPPER.PNG"])
    assert "garden__2019__flower.jpg" in ids and "README.txt" not in ids
    assert dict(listed)["street__bus.jpg"] == folder / "street" / "bus.jpg"
    assert list_images(folder) == listed  # stable


def test_a_list_file_takes_relative_and_absolute_paths_in_its_order(tmp_path):
    folder = write_photos(tmp_path / "photos", corrupt=False)
    outside = tmp_path / "elsewhere" / "x.jpg"
    outside.parent.mkdir()
    shutil.copy(folder / "china.jpg", outside)
    lst = folder / "list.txt"
    lst.write_text(f"# my photos\nstreet/zidane.jpg\n\n{folder / 'china.jpg'}\n{outside}\n")
    listed = list_images(lst)
    assert [iid for iid, _ in listed][:2] == ["street__zidane.jpg", "china.jpg"]
    assert listed[2][0] == image_id(outside.as_posix())  # outside the folder: whole path
    assert [p for _, p in listed] == [folder / "street/zidane.jpg", folder / "china.jpg", outside]


def test_bad_sources_and_clashing_ids_are_refused_naming_them(tmp_path):
    with pytest.raises(DataError, match=re.escape("data.scn_images: not found")):
        list_images(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        list_images(tmp_path / "empty")
    clash = tmp_path / "clash"
    (clash / "a").mkdir(parents=True)
    (clash / "a" / "b.jpg").write_bytes(b"x")
    (clash / "a__b.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match=re.escape("'a__b.jpg' is also the id of")):
        list_images(clash)


def test_bad_files_are_counted_and_named_as_for_voc(tmp_path):
    folder = write_photos(tmp_path / "photos")
    (folder / "empty.png").write_bytes(b"")
    (folder / "list.txt").write_text("china.jpg\nmissing.jpg\n")
    policy = SkipPolicy(on_error="skip", max_skip_fraction=0.5)
    ds = ImageFolderDataset(folder, "train", policy)
    assert ds.ids == PHOTO_IDS and len(ds.ids_listed) == 6
    assert policy.metrics() == {
        "skipped": 2,
        "skipped_reasons": {"corrupt_image": 1, "empty_image": 1},
    }
    assert "broken.jpg" in policy.examples["corrupt_image"]
    bus = ds.by_id("street__bus.jpg")
    assert (bus.width, bus.height) == (300, 400) and bus.objects == ()  # 810 x 1080 scaled
    lst = ImageFolderDataset(folder / "list.txt", "train", SkipPolicy(max_skip_fraction=0.5))
    assert lst.ids == ["china.jpg"] and lst.policy.reasons == {"missing_image": 1}
    with pytest.raises(TooManySkipped, match=r"skipped 2 of 6 items"):
        ImageFolderDataset(folder, "train", SkipPolicy(max_skip_fraction=0.05, stage="x"))
    with pytest.raises(
        DataError, match=re.escape("empty.png: image file is empty")
    ):  # first in order
        ImageFolderDataset(folder, "train", SkipPolicy(on_error="fail"))


# --------------------------------------------------------------------------- stages


def _params(tmp_path: Path, tiny_voc: Path, photos: Path | None, **top) -> str:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["data"].update(
        scenes_root=str(tiny_voc.parent.parent),
        scn_images=None if photos is None else str(photos),
        scn_split="train",  # the name the photographs' pairs are written under
        max_skip_fraction=0.25,  # one corrupt file of five
    )
    data["paths"] = {k: str(tmp_path / "out" / k) for k in data["paths"]}
    data["proposals"]["edgebox"].update(min_size=8, max_boxes=8)
    data["pairs"]["max_pairs_per_image"] = 6
    data["network"]["input_size"] = 64
    data["targets"].update(batch_size=32, workers=0)
    data["train"].update(epochs=2, batch_size=16, context_warmup_epochs=1)
    for key, value in top.items():
        if isinstance(value, dict):
            data[key].update(value)
        else:
            data[key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_config_refuses_an_scn_split_that_is_also_the_test_split(tmp_path, tiny_voc):
    path = _params(tmp_path, tiny_voc, tmp_path, data={"scn_split": "test"})
    with pytest.raises(
        ConfigError, match=re.escape("data.scn_split: 'test' is also data.eval_test_split")
    ):
        load_params(path)
    load_params(_params(tmp_path, tiny_voc, None, data={"scn_split": "test"}))  # unset: fine


def test_bbox_proposals_are_refused_naming_the_key_and_the_proposal(tmp_path, tiny_voc):
    photos = write_photos(tmp_path / "photos")
    path = _params(tmp_path, tiny_voc, photos, proposal="bbox")
    with pytest.raises(ConfigError, match=r"proposal: 'bbox' .* data.scn_images \("):
        run_stage("proposals", path)
    assert not (tmp_path / "out" / "proposals").exists()


def test_proposals_to_train_on_real_photographs_then_a_changed_photo_is_refused(tmp_path, tiny_voc):
    """proposals -> pairs -> targets -> train with the SCN pairs from a folder of the
    packaged photographs (one corrupt file skipped), the held-out pairs from the tiny
    VOC test split; recall is absent for the photographs, present for the test split."""
    photos = write_photos(tmp_path / "photos")
    path = _params(tmp_path, tiny_voc, photos)
    out = tmp_path / "out"
    prop = run_stage("proposals", path)
    train, test = prop["splits"]["train"], prop["splits"]["test"]
    assert train["images"] == 4 and train["images_listed"] == 5
    assert train["skipped"] == 1 and train["skipped_reasons"] == {"corrupt_image": 1}
    assert not any(k.startswith(("recall", "gt_boxes")) for k in train)  # absent, not zero
    assert 0 <= test["recall_iou0.5"] <= 1 and test["gt_boxes"] > 0
    assert prop["scn_images"] == str(photos)
    props = read_proposals(out / "proposals" / "train.h5", expect_method="edgebox")
    assert props.image_ids == PHOTO_IDS and props.provenance["scn_images"] == str(photos)
    assert props.image_sizes.tolist()[PHOTO_IDS.index("street__bus.jpg")] == [300, 400]
    manifest = json.loads((out / "proposals" / "scn_images.json").read_text())
    assert manifest["scn_images"] == str(photos) and manifest["skipped"] == ["street__broken.jpg"]
    assert [e["id"] for e in manifest["images"]] == PHOTO_IDS
    assert all(len(e["sha256"]) == 64 and e["bytes"] > 0 for e in manifest["images"])

    pairs = run_stage("pairs", path)
    assert pairs["splits"]["train"]["pairs"] > 0 and pairs["splits"]["test"]["pairs"] > 0
    with h5py.File(out / "pairs" / "train.h5") as fh:
        assert set(s.decode() for s in fh["image_ids"][:]) <= set(PHOTO_IDS)
    targets = run_stage("targets", path)
    assert targets["splits"]["train"]["patches"] == pairs["splits"]["train"]["patches"]
    trained = run_stage("train", path)
    assert trained["epochs_run"] == 2 and (out / "train" / "model.pt").is_file()

    # same path, other content: the stages that read the images refuse to mix them
    with h5py.File(out / "pairs" / "train.h5") as fh:
        first = fh["image_ids"][0].decode()  # a photo the pairs use
    changed = photos / next(rel for rel in LAYOUT.values() if image_id(rel) == first)
    changed.write_bytes((photos / "garden/2019/flower.jpg").read_bytes()
                        if first != "garden__2019__flower.jpg"
                        else (photos / "china.jpg").read_bytes())  # fmt: skip
    with pytest.raises(DataError, match="changed since the proposals stage hashed it"):
        run_stage("targets", path)
    again = run_stage("proposals", path)  # rerunning proposals takes the new content
    assert again["splits"]["train"]["images"] == 4
    assert run_stage("pairs", path) and run_stage("targets", path)


@pytest.mark.slow
def test_dvc_repro_train_on_a_folder_of_photos_and_the_null_default(tmp_path):
    """`dvc repro train` with data.scn_images set (the folder templated nowhere: the
    proposals stage's manifest is the dependency of targets and train), then the same
    repo with the default (null): both resolve, run, and leave `dvc status` clean."""
    params = tiny_params({"data": {"scn_images": "photos", "max_skip_fraction": 0.25}})
    repo = make_repo(tmp_path, params)
    write_photos(repo / "photos")
    run = dvc(repo, "repro", "train", timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    m = json.loads((repo / "metrics" / "details" / "proposals.json").read_text())
    assert m["splits"]["train"]["skipped"] == 1 and "recall_iou0.5" not in m["splits"]["train"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for stage in ("targets", "train"):
        assert "data/proposals/scn_images.json" in [d["path"] for d in lock[stage]["deps"]]
    status = dvc(repo, "status", "--json", "train")  # train and its upstream are up to date
    assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout
    params["data"]["scn_images"] = None  # what `-S data.scn_images=null` writes
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    again = dvc(repo, "repro", "train", timeout=1200)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    m = json.loads((repo / "metrics" / "details" / "proposals.json").read_text())
    assert m["splits"]["train"]["images"] == params["scenes"]["n_train"]
    assert "recall_iou0.5" in m["splits"]["train"]
    assert json.loads((repo / "data" / "proposals" / "scn_images.json").read_text()) == {
        "scn_images": None
    }
