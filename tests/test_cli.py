"""The `scn` CLI: inspect and show on real artifacts; stage commands share the runner."""

import h5py
import numpy as np
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.runner import STAGE_NAMES


def test_every_stage_has_a_command_and_a_script():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for name in STAGE_NAMES:
        assert name in main.commands
        assert (root / "stages" / f"{name}.py").is_file()


def test_inspect_h5_shows_shapes_dtypes_attrs_and_stats(tmp_path):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as fh:
        fh.attrs["backbone"] = "efficientnet_lite0"
        fh.create_dataset(
            "features",
            data=np.array([[0.0, 1.0], [0.0, 3.0]], np.float32),
            compression="gzip",
            chunks=(1, 2),
        )
    out = CliRunner().invoke(main, ["inspect", str(path)])
    assert out.exit_code == 0, out.output
    assert "@backbone = efficientnet_lite0" in out.output
    assert "features: shape=(2, 2) dtype=float32, gzip" in out.output
    assert "mean=1 " in out.output and "zeros=50.0%" in out.output


def test_inspect_rejects_non_hdf5(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    out = CliRunner().invoke(main, ["inspect", str(bad)])
    assert out.exit_code != 0
    assert "bad.h5: not a readable HDF5 file" in out.output


def test_inspect_voc_folder(tiny_voc):
    out = CliRunner().invoke(main, ["inspect", str(tiny_voc)])
    assert out.exit_code == 0, out.output
    assert "split train: 4 images" in out.output
    assert "8 annotations, 8 images" in out.output


def test_show_renders_png(tiny_voc, tmp_path):
    import yaml
    from PIL import Image

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"scenes_root": str(tmp_path / "scenes")}}))
    out_png = tmp_path / "shown.png"
    out = CliRunner().invoke(
        main, ["show", "000000", "--split", "train", "--params", str(params), "-o", str(out_png)]
    )
    assert out.exit_code == 0, out.output
    im = np.asarray(Image.open(out_png).convert("RGB"))
    assert im.shape == (96, 96, 3)
    assert ((im == [0, 255, 0]).all(axis=2)).sum() > 20  # green ground-truth boxes drawn


def test_show_unknown_image_is_a_clear_error(tiny_voc, tmp_path):
    import yaml

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"scenes_root": str(tmp_path / "scenes")}}))
    out = CliRunner().invoke(main, ["show", "nope", "--params", str(params)])
    assert out.exit_code != 0
    assert "nope" in out.output


def test_show_pairs_draws_both_boxes_and_the_offset(tiny_voc, tmp_path):
    import yaml
    from PIL import Image

    from pipeline.boxes import corner_offsets

    boxes = np.array([[10, 10, 40, 40], [50, 20, 90, 60]], np.float32)  # (2, 4) in 000000
    pairs = tmp_path / "train.h5"
    with h5py.File(pairs, "w") as fh:
        fh.attrs["split"] = "train"
        fh.create_dataset("image_ids", data=["000000"], dtype=h5py.string_dtype())
        fh.create_dataset("image_sizes", data=np.array([[96, 96]], np.int32))
        fh.create_dataset("patches/image_index", data=np.zeros(2, np.int32))
        fh.create_dataset("patches/box", data=boxes)
        fh.create_dataset("pairs/top", data=np.array([0], np.int64))
        fh.create_dataset("pairs/bottom", data=np.array([1], np.int64))
        offset = corner_offsets(boxes[[0]], boxes[[1]], 96, 96, "image")
        fh.create_dataset("pairs/offset", data=np.asarray(offset, np.float32).reshape(1, 8))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"scenes_root": str(tmp_path / "scenes")}}))
    out_png = tmp_path / "pair.png"
    args = ["show", "pairs", str(pairs), "--params", str(params), "-o", str(out_png)]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    im = np.asarray(Image.open(out_png).convert("RGB"))
    assert im.shape == (192, 192, 3)  # drawn at twice the size
    assert (im[20:80, 20] == [255, 0, 0]).all(axis=1).any()  # top box, red, left edge
    assert (im[40:120, 100] == [0, 255, 0]).all(axis=1).any()  # bottom box, green
    assert ((im == [255, 255, 0]).all(axis=2)).sum() > 30  # the offset arrow
    bad = CliRunner().invoke(main, [*args[:3], "--index", "5", "--params", str(params)])
    assert bad.exit_code != 0 and "pair 5 does not exist; allowed: 0..0" in bad.output


def test_show_draws_proposals_from_the_store(tiny_voc, tmp_path):
    import yaml
    from PIL import Image

    from pipeline.proposals.base import ProposalSet
    from pipeline.proposals.store import write_proposals

    props_file = tmp_path / "train.h5"
    boxes = [np.array([[5, 5, 60, 60]], np.float32), np.zeros((0, 4), np.float32)]
    props = ProposalSet(
        ["000000", "000001"],
        np.array([[96, 96], [96, 96]], np.int32),
        boxes,
        [np.ones(1, np.float32), np.zeros(0, np.float32)],
        provenance={"method": "edgebox"},
    )
    write_proposals(props_file, props, {"split": "train", "dataset": "scenes", "created_by": "t"})
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"scenes_root": str(tmp_path / "scenes")}}))
    out_png = tmp_path / "p.png"
    base = ["show", "000000", "--params", str(params), "--proposals", str(props_file)]
    out = CliRunner().invoke(main, [*base, "-o", str(out_png)])
    assert out.exit_code == 0, out.output
    im = np.asarray(Image.open(out_png).convert("RGB"))
    assert ((im == [255, 0, 0]).all(axis=2)).sum() > 20  # the proposal, in red
    missing = CliRunner().invoke(
        main,
        [
            "show",
            "000004",
            "--split",
            "test",
            "--params",
            str(params),
            "--proposals",
            str(props_file),
        ],
    )
    assert missing.exit_code != 0 and "has no proposals in this file" in missing.output
