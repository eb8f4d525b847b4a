"""Bad input at the stage level: each case stops or skips with a clear message naming it.

The reader-level cases (each malformed XML field, each image decoding problem) live in
tests/test_data_voc.py; these run whole stages through ``pipeline.runner`` on a tiny
VOC-layout dataset and check what the stage writes (or does not write).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml

from pipeline.config import ConfigError
from pipeline.errors import DataError, TooManySkipped
from pipeline.io import TMP_MARK
from pipeline.proposals.store import read_proposals
from pipeline.runner import run_stage
from tests.helpers.voc import write_tiny_voc
from tools.dvc_repo import tiny_params

ROOT = Path(__file__).resolve().parent.parent


def write_params(tmp_path: Path, scenes_root: Path, **patch) -> Path:
    """Tiny params reading ``scenes_root``, writing under ``tmp_path/out``; bbox proposals."""
    data = tiny_params({"proposal": "bbox", "proposals": {"detect_method": "bbox"}})
    data["data"]["scenes_root"] = str(scenes_root)
    data["paths"] = {k: str(tmp_path / "out" / k) for k in data["paths"]}
    for key, value in patch.items():  # "section.key" or top-level key
        *sections, leaf = key.split(".")
        node = data
        for s in sections:
            node = node[s]
        node[leaf] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def written(tmp_path: Path) -> list[str]:
    """Every file under the outputs, temporaries included."""
    out = tmp_path / "out"
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def spoil(year: Path, ids: list[str]) -> dict[str, Path]:
    """One bad item of each kind, on ``ids`` in order; the fourth has no objects (valid)."""
    truncated, malformed, outside, empty = ids
    jpg = year / "JPEGImages" / f"{truncated}.jpg"
    jpg.write_bytes(jpg.read_bytes()[:300])  # a JPEG cut off mid-scan
    xml = year / "Annotations" / f"{malformed}.xml"
    xml.write_text(xml.read_text()[:-40])  # no closing tags
    box_xml = year / "Annotations" / f"{outside}.xml"
    text = box_xml.read_text()
    start = text.index("<xmax>") + len("<xmax>")
    box_xml.write_text(text[:start] + "500" + text[text.index("</xmax>") :])  # image is 96 px
    no_obj = year / "Annotations" / f"{empty}.xml"
    text = no_obj.read_text()
    no_obj.write_text(text[: text.index("  <object>")] + "</annotation>\n")
    return {"corrupt_image": jpg, "malformed_xml": xml, "bad_box": box_xml}


@pytest.fixture
def voc16(tmp_path: Path) -> Path:
    """16 images: 000000-000007 train, 000008-000015 test."""
    return write_tiny_voc(tmp_path / "scenes", n_images=16)


def test_bad_items_are_skipped_and_counted_in_the_stage_metrics(tmp_path, voc16):
    spoil(voc16, ["000000", "000001", "000002", "000003"])
    params = write_params(tmp_path, tmp_path / "scenes", **{"data.max_skip_fraction": 0.4})
    metrics = run_stage("proposals", params)
    train = metrics["splits"]["train"]
    assert train["skipped"] == 3 and train["images"] == 5
    assert train["skipped_reasons"] == {"corrupt_image": 1, "malformed_xml": 1, "bad_box": 1}
    assert metrics["splits"]["test"]["skipped"] == 0
    saved = json.loads((tmp_path / "out" / "metrics" / "details" / "proposals.json").read_text())
    assert saved["splits"]["train"]["skipped_reasons"] == train["skipped_reasons"]
    # the DVC metric: the headline figures, the skipped items of both splits among them
    headline = json.loads((tmp_path / "out" / "metrics" / "proposals.json").read_text())
    assert headline["proposals_skip"] == train["skipped"] == 3 and "splits" not in headline
    props = read_proposals(tmp_path / "out" / "proposals" / "train.h5")
    assert "000003" in props.image_ids and "000000" not in props.image_ids
    # the image with no objects has no ground-truth boxes, hence no bbox proposals; the
    # pairs stage takes the others
    pairs = run_stage("pairs", params)["splits"]["train"]
    assert pairs["pairs"] > 0


@pytest.mark.slow  # the skip case runs the stage script in a subprocess
@pytest.mark.parametrize("on_error", ["skip", "fail"])
def test_bad_items_above_the_threshold_fail_the_stage_and_write_nothing(tmp_path, voc16, on_error):
    # in the test split, read after train: the train outputs must not appear either
    bad = spoil(voc16, ["000008", "000009", "000010", "000011"])
    params = write_params(
        tmp_path,
        tmp_path / "scenes",
        **{"data.max_skip_fraction": 0.3, "data.on_error": on_error},
    )
    with pytest.raises((TooManySkipped, DataError)) as err:
        run_stage("proposals", params)
    msg = str(err.value)
    if on_error == "skip":
        assert "proposals: skipped 3 of 8 items (37.5%), above max_skip_fraction=0.3" in msg
        assert "corrupt_image" in msg and str(bad["corrupt_image"]) in msg
    else:  # the first bad item, by name
        assert msg.startswith(f"{bad['corrupt_image']}: unreadable or corrupt image")
    assert written(tmp_path) == []
    if on_error == "skip":  # the stage script as DVC runs it: exit 2, one clear line
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        run = subprocess.run(
            [sys.executable, str(ROOT / "stages" / "proposals.py"), "--params", str(params)],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert run.returncode == 2, run.stderr[-2000:]
        assert "ERROR pipeline.runner: proposals: skipped 3 of 8 items" in run.stderr
        assert str(bad["corrupt_image"]) in run.stderr and "Traceback" not in run.stderr
        assert written(tmp_path) == []


def test_empty_image_list_names_the_split_file(tmp_path, voc16):
    listing = voc16 / "ImageSets" / "Main" / "train.txt"
    listing.write_text("\n")
    params = write_params(tmp_path, tmp_path / "scenes")
    for stage in ("proposals", "detect_proposals"):
        with pytest.raises(DataError, match="split 'train' lists no images") as err:
            run_stage(stage, params)
        assert err.value.path == listing
    assert written(tmp_path) == []


def test_images_without_objects_give_no_pairs_and_a_clear_error(tmp_path, voc16):
    for i in range(8):  # every train image
        xml = voc16 / "Annotations" / f"{i:06d}.xml"
        text = xml.read_text()
        xml.write_text(text[: text.index("  <object>")] + "</annotation>\n")
    params = write_params(tmp_path, tmp_path / "scenes")
    metrics = run_stage("proposals", params)["splits"]["train"]
    assert metrics["images"] == 8 and metrics["boxes_per_image"] == 0 and metrics["skipped"] == 0
    src = tmp_path / "out" / "proposals" / "train.h5"
    with pytest.raises(DataError, match=r"no pairs from 8 images") as err:
        run_stage("pairs", params)
    assert err.value.path == src
    assert not (tmp_path / "out" / "pairs").exists() or not any(
        (tmp_path / "out" / "pairs").iterdir()
    )


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("scenes.n_train", 2.5, "scenes.n_train: 2.5 is not an integer"),
        ("network.input_size", "96", "network.input_size: '96' is not an integer"),
        ("classify.costs", "1.0", "classify.costs: '1.0' is not a list"),
        ("proposals.edgebox.alpha", "high", "proposals.edgebox.alpha: 'high' is not a number"),
        ("data.max_skip_fraction", [0.1], "data.max_skip_fraction: [0.1] is not a number"),
        ("train.lr", True, "train.lr: True is not a number"),
        ("targets.batch_size", None, "targets.batch_size: None is not an integer"),
        ("pairs", 5, "pairs: expected a mapping of keys, got 5"),
        ("backbone", ["vgg19"], "backbone: ['vgg19'] is not a valid choice; allowed:"),
    ],
)
def test_wrong_param_types_stop_any_stage_before_work(tmp_path, voc16, key, value, message):
    params = write_params(tmp_path, tmp_path / "scenes", **{key: value})
    with pytest.raises(ConfigError) as err:
        run_stage("proposals", params)
    assert str(err.value).startswith(f"{params}: ") and message in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_train_refuses_a_target_cache_from_another_backbone(tmp_path):
    write_tiny_voc(tmp_path / "scenes", n_images=8)
    params = write_params(tmp_path, tmp_path / "scenes", **{"network.input_size": 32})
    for stage in ("proposals", "pairs", "targets"):
        run_stage(stage, params)
    cache = tmp_path / "out" / "targets" / "train.h5"
    with h5py.File(cache, "a") as fh:  # as if built by the vgg19 top stream
        assert fh.attrs["backbone"] == "efficientnet_lite0"
        fh.attrs["backbone"] = "vgg19"
    with pytest.raises(DataError) as err:
        run_stage("train", params)
    assert str(err.value).startswith(f"{cache}: built for another configuration: ")
    assert "backbone is 'vgg19' in the cache, expected 'efficientnet_lite0'" in str(err.value)
    # a cache cut short (a copy interrupted by hand, a full disk) is refused by name too
    with h5py.File(cache, "a") as fh:
        fh.attrs["backbone"] = "efficientnet_lite0"
    cache.write_bytes(cache.read_bytes()[:2048])
    with pytest.raises(DataError, match="not a readable HDF5 file") as err:
        run_stage("train", params)
    assert err.value.path == cache
    train_out = tmp_path / "out" / "train"
    assert not (train_out / "model.pt").exists()
    assert not [p for p in tmp_path.rglob(f"*{TMP_MARK}*")]
