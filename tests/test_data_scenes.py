"""The generated scenes: VOC layout, torchvision compatibility, determinism, context rules."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from torchvision.datasets import VOCDetection

from pipeline.config import ConfigError, build
from pipeline.data import scenes as scenes_mod
from pipeline.data.config import SCENE_CLASSES, ScenesConfig
from pipeline.data.scenes import generate_scenes, render_scene, split_ids
from pipeline.data.scenes import glyphs as glyphs_mod
from pipeline.data.scenes import layouts as layouts_mod
from pipeline.data.scenes import render as render_mod
from pipeline.data.scenes import writer as writer_mod
from pipeline.data.voc import VOCDataset, open_split
from pipeline.params import Params
from pipeline.runner import run_stage

TINY = ScenesConfig(n_train=6, n_val=2, n_test=4, image_size=128)
V2 = {"version": 2, "cue_probability": 1.0}  # version 2's rules (docs/scenes.md)


def files(year: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(year)): p.read_bytes() for p in sorted(year.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("scenes")
    metrics = generate_scenes(root, TINY)
    return root / "VOCdevkit" / "SCENES", metrics


@pytest.fixture(scope="module")
def medium(tmp_path_factory) -> Path:
    """80 images of 192 px, no out-of-context objects: enough to check the rules."""
    root = tmp_path_factory.mktemp("scenes_medium")
    cfg = ScenesConfig(n_train=60, n_val=0, n_test=20, image_size=192, out_of_context=0.0)
    generate_scenes(root, cfg)
    return root / "VOCdevkit" / "SCENES"


def test_exact_voc_layout(tiny):
    year, metrics = tiny
    main = year / "ImageSets" / "Main"
    ids = split_ids(TINY)
    for split in ("train", "val", "trainval", "test"):
        assert (main / f"{split}.txt").read_text().split() == ids[split]
        for c in SCENE_CLASSES:
            lines = (main / f"{c}_{split}.txt").read_text().splitlines()
            assert [ln.split()[0] for ln in lines] == ids[split]
            assert all(ln.split()[1] in ("1", "-1", "0") for ln in lines)
    all_ids = ids["train"] + ids["val"] + ids["test"]
    assert sorted(p.stem for p in (year / "JPEGImages").glob("*.jpg")) == all_ids
    assert sorted(p.stem for p in (year / "Annotations").glob("*.xml")) == all_ids
    assert ids["trainval"] == ids["train"] + ids["val"]
    assert not set(ids["trainval"]) & set(ids["test"])
    assert metrics["images"] == {"train": 6, "val": 2, "trainval": 8, "test": 4}
    assert not list(year.parent.glob("*.tmp-*"))  # nothing left from the atomic write


def test_reader_agrees_with_metrics_and_label_files(tiny):
    year, metrics = tiny
    n, difficult, counts = 0, 0, dict.fromkeys(SCENE_CLASSES, 0)
    for split in ("trainval", "test"):
        ds = VOCDataset(year, split, classes=SCENE_CLASSES)
        assert len(ds) == len(split_ids(TINY)[split])
        labels = ds.image_labels()  # from the {class}_{split}.txt files
        derived = np.full_like(labels, -1)
        for i, im in enumerate(ds):
            assert (im.width, im.height) == (128, 128)
            for o in im.objects:
                n += 1
                difficult += o.difficult
                counts[o.name] += 1
                c = SCENE_CLASSES.index(o.name)
                derived[i, c] = 1 if not o.difficult or derived[i, c] == 1 else 0
                x1, y1, x2, y2 = o.box
                assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 128
                short = min(x2 - x1, y2 - y1)
                if short < TINY.difficult_max_size:
                    assert o.difficult
        assert np.array_equal(labels, derived)
    assert metrics["objects"] == n and metrics["difficult"] == difficult
    assert metrics["objects_per_class"] == counts
    assert n > 3 * 12  # several objects per image


@pytest.mark.parametrize("year, split", [("2012", "train"), ("2012", "val"), ("2007", "test")])
def test_loads_with_torchvision_and_agrees_box_for_box(tiny, tmp_path, year, split):
    folder, _ = tiny
    # VOCDetection only knows VOCdevkit/VOC<year>: link the generated folder under that name
    (tmp_path / "VOCdevkit").mkdir()
    (tmp_path / "VOCdevkit" / f"VOC{year}").symlink_to(folder, target_is_directory=True)
    tv = VOCDetection(str(tmp_path), year=year, image_set=split)
    ours = VOCDataset(folder, split, classes=SCENE_CLASSES)
    assert len(tv) == len(ours) > 0
    for k, im in enumerate(ours):
        image, target = tv[k]
        ann = target["annotation"]
        assert ann["filename"] == f"{im.id}.jpg"
        assert image.size == (im.width, im.height)
        assert np.array_equal(np.asarray(image.convert("RGB")), ours.load_image(im))
        objs = ann.get("object", [])
        assert len(objs) == len(im.objects)
        for t, o in zip(objs, im.objects, strict=True):
            bb = t["bndbox"]
            voc = [float(bb[key]) for key in ("xmin", "ymin", "xmax", "ymax")]
            # project convention: x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax
            assert o.box == (voc[0] - 1, voc[1] - 1, voc[2], voc[3])
            assert t["name"] == o.name and int(t["difficult"]) == int(o.difficult)


def test_same_seed_is_byte_identical_and_seeds_differ(tmp_path):
    cfg = dataclasses.replace(TINY, n_train=4, n_val=0, n_test=2)
    a = files(generate_scenes(tmp_path / "a", cfg) and tmp_path / "a" / "VOCdevkit" / "SCENES")
    b = files(generate_scenes(tmp_path / "b", cfg) and tmp_path / "b" / "VOCdevkit" / "SCENES")
    assert a == b
    assert any(k.endswith(".jpg") for k in a) and any(k.endswith(".xml") for k in a)
    other = dataclasses.replace(cfg, seed=1)
    generate_scenes(tmp_path / "c", other)
    c = files(tmp_path / "c" / "VOCdevkit" / "SCENES")
    assert c.keys() == a.keys()
    for key in a:
        if key.startswith(("JPEGImages", "Annotations")):
            assert a[key] != c[key], key


def test_images_do_not_depend_on_split_sizes_or_class_subset():
    base = render_scene(TINY, 3)
    bigger = render_scene(dataclasses.replace(TINY, n_train=50, n_test=9), 3)
    subset = render_scene(dataclasses.replace(TINY, classes=("ball", "sun")), 3)
    assert np.array_equal(base[0], bigger[0]) and np.array_equal(base[0], subset[0])
    assert [o.name for o in subset[1]] == [o.name for o in base[1] if o.name in ("ball", "sun")]


def test_regenerating_replaces_atomically_and_failure_keeps_old(tmp_path, monkeypatch):
    cfg = dataclasses.replace(TINY, n_train=2, n_val=0, n_test=1)
    generate_scenes(tmp_path, cfg)
    year = tmp_path / "VOCdevkit" / "SCENES"
    (year / "stale.txt").write_text("old")
    generate_scenes(tmp_path, cfg)
    assert not (year / "stale.txt").exists()
    before = files(year)

    def broken(cfg, index):
        if index == 1:
            raise RuntimeError("boom")
        return render_scene(cfg, index)

    monkeypatch.setattr(writer_mod, "render_scene", broken)  # looked up by _write_dataset
    with pytest.raises(RuntimeError, match="boom"):
        generate_scenes(tmp_path, dataclasses.replace(cfg, seed=5))
    assert files(year) == before
    assert sorted(p.name for p in (tmp_path / "VOCdevkit").iterdir()) == ["SCENES"]


def test_corner_pair_boxes_are_checked_like_flat_ones():
    # PIL's line(joint="curve") calls pieslice with [(x0, y0), (x1, y1)] (seed 1, image 303).
    ok = glyphs_mod._SafeDraw._ok
    assert ok([1, 2, 3, 4]) and ok([(1, 2), (3, 4)]) and ok(np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert not ok([(3, 2), (1, 4)]) and not ok([1, 4, 3, 2])
    render_scene(dataclasses.replace(ScenesConfig(), seed=1, image_size=256), 303)


def test_many_scenes_over_seeds_and_sizes_exercise_every_rule_and_primitive(monkeypatch):
    """Hundreds of scenes over several seeds and sizes: no crash, and every layout, glyph,
    drawing primitive, cue branch, out-of-context and clutter rule is reached at least once,
    so a crash in any of them is caught here rather than by a user's seed."""
    seen: dict[str, int] = {}

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            seen[name] = seen.get(name, 0) + 1
            return fn(*args, **kwargs)

        return wrapped

    # the tables are patched in place (render shares them); a function in the module whose
    # globals its caller reads (render_scene lives in pipeline.data.scenes.render)
    for name, fn in layouts_mod.LAYOUTS.items():
        monkeypatch.setitem(layouts_mod.LAYOUTS, name, spy(f"layout:{name}", fn))
    for kind, fn in glyphs_mod.GLYPHS.items():
        monkeypatch.setitem(glyphs_mod.GLYPHS, kind, spy(f"glyph:{kind}", fn))
    for prim in ("line", "ellipse", "rectangle", "polygon", "pieslice", "rounded_rectangle"):
        fn = getattr(glyphs_mod._SafeDraw, prim)
        monkeypatch.setattr(glyphs_mod._SafeDraw, prim, spy(f"draw:{prim}", fn))
    render_item = render_mod._render_item

    def render_item_spy(item, rng, nuisance):
        if item.cls is not None:
            seen[f"class:{item.cls}:cue={item.cue}"] = 1
        return render_item(item, rng, nuisance)

    monkeypatch.setattr(render_mod, "_render_item", render_item_spy)
    monkeypatch.setattr(
        render_mod, "_out_of_context", spy("out_of_context", render_mod._out_of_context)
    )
    base = ScenesConfig(version=1, cue_probability=0.6)  # v2's cues are never absent
    n_images = 0
    for seed, size, n in [(0, 64, 120), (1, 97, 120), (2, 256, 120), (1, 256, 20), (3, 160, 120)]:
        cfg = dataclasses.replace(base, seed=seed, image_size=size)
        start = 300 if (seed, size) == (1, 256) else 0  # includes the image that crashed
        for k in range(start, start + n):
            image, objects, _, _ = render_scene(cfg, k)
            assert image.shape == (size, size, 3)
            for o in objects:
                assert 1 <= o.box[0] <= o.box[2] <= size and 1 <= o.box[1] <= o.box[3] <= size
            n_images += 1
    assert n_images == 500
    wanted = (
        [f"layout:{name}" for name in layouts_mod.LAYOUTS]
        + [f"glyph:{kind}" for kind in glyphs_mod.GLYPHS]
        + [f"draw:{p}" for p in ("line", "ellipse", "rectangle", "polygon", "pieslice")]
        + ["out_of_context"]
    )
    assert [w for w in wanted if w not in seen] == []
    for cls in SCENE_CLASSES:  # every class drawn, with and without its cue where it has one
        assert f"class:{cls}:cue=False" in seen or f"class:{cls}:cue=True" in seen, cls
    for cls in scenes_mod.ROUND_CLASSES:  # the discs whose cue may be absent
        assert {f"class:{cls}:cue=True", f"class:{cls}:cue=False"} <= set(seen), cls


# ----------------------------------------------------------------------------- versions

V1_TINY_SHA256 = "8d850e6907e73abb102cb4c0ba29c0fa97552b09e5c842bd09eb2307534997cc"


def tree_sha256(year: Path) -> str:
    h = hashlib.sha256()
    for name, data in files(year).items():
        h.update(name.encode())
        h.update(data)
    return h.hexdigest()


def test_version_1_is_byte_identical_to_the_rules_before_version_2(tmp_path):
    """RESULTS.md's earlier figures came from version 1: it must stay reproducible. The
    hash was taken with the generator of commit 531e0e1 (before version 2 existed)."""
    cfg = dataclasses.replace(TINY, version=1, cue_probability=0.6)
    generate_scenes(tmp_path, cfg)
    assert tree_sha256(tmp_path / "VOCdevkit" / "SCENES") == V1_TINY_SHA256
    generate_scenes(tmp_path / "v2", dataclasses.replace(cfg, **V2))
    assert tree_sha256(tmp_path / "v2" / "VOCdevkit" / "SCENES") != V1_TINY_SHA256


def test_version_2_discs_always_show_a_faint_cue(monkeypatch):
    """Every disc carries its class detail, at an opacity inside the configured range, and
    the detail layer is drawn at that opacity (a weak cue, never an absent one)."""
    cfg = dataclasses.replace(
        TINY, **V2, cue_contrast_min=0.3, cue_contrast_max=0.5, image_size=192
    )
    seen: list = []
    render_item = render_mod._render_item

    def render_item_spy(item, rng, nuisance):
        if item.cls in scenes_mod.ROUND_CLASSES:
            seen.append(item)
        return render_item(item, rng, nuisance)

    monkeypatch.setattr(render_mod, "_render_item", render_item_spy)
    for k in range(40):
        render_scene(cfg, k)
    assert {it.cls for it in seen} == set(scenes_mod.ROUND_CLASSES)
    assert all(it.cue for it in seen)
    alphas = np.array([it.extra["cue_alpha"] for it in seen])
    assert alphas.min() >= 0.3 and alphas.max() <= 0.5 and alphas.std() > 0.02
    rng = np.random.default_rng(0)
    for cls in scenes_mod.ROUND_CLASSES:
        item = scenes_mod.Item("round", 0, 0, 60, 60, cls=cls, cue=True, extra={"cue_alpha": 0.4})
        layers = glyphs_mod.GLYPHS["round"](item, 60, 60, rng)
        assert len(layers) == 2 and layers[0][0].max() == 255, cls
        # the detail at the cue's opacity (the sun's glow peaks at the disc's centre pixel)
        assert 0.9 * 255 * 0.4 <= layers[1][0].max() <= round(255 * 0.4), cls


@pytest.mark.parametrize("version", [{"version": 1, "cue_probability": 0.6}, V2])
def test_no_version_writes_a_sliver_box(version):
    """A one-pixel-wide sliver at the border (xmin == xmax), which the reader rejects as
    zero-area, is left out of the annotation (version 1 wrote it until issue 26)."""
    cfg = dataclasses.replace(TINY, **version, image_size=64, out_of_context=1.0)
    n = 0
    for k in range(150):
        for o in render_scene(cfg, k)[1]:
            assert o.box[2] > o.box[0] and o.box[3] > o.box[1], (k, o)
            n += 1
    assert n > 300


@pytest.mark.slow
def test_every_split_of_the_default_with_2000_unlabelled_has_only_valid_boxes():
    """The totality check at the size a user runs for SCN's unlabelled pool: the default
    scenes section with ``n_unlabelled: 2000`` (2,450 images, ~30 s of rendering, no
    files). Version 1 wrote xmin == xmax == 256 for images 001126, 001750 and 002159 (an
    object clipped away at the right edge); every box must pass the VOC reader's rule
    1 <= xmin < xmax <= width (and the same for y)."""
    cfg = ScenesConfig(seed=0, n_train=200, n_val=50, n_test=200, n_unlabelled=2000)
    assert (cfg.image_size, cfg.version, cfg.out_of_context) == (256, 1, 0.1)  # params.yaml
    ids = split_ids(cfg)
    assert len(ids["unlabelled"]) == 2000 and ids["unlabelled"][-1] == "002449"
    s = cfg.image_size
    n_objects = 0
    for split in ("trainval", "test", "unlabelled"):
        for image_id in ids[split]:
            for o in render_scene(cfg, int(image_id))[1]:
                xmin, ymin, xmax, ymax = o.box
                assert 1 <= xmin < xmax <= s and 1 <= ymin < ymax <= s, (split, image_id, o)
                n_objects += 1
    assert n_objects > 20_000


def test_unlabelled_pool_follows_the_test_split_and_changes_no_other_image(tmp_path):
    generate_scenes(tmp_path / "a", dataclasses.replace(TINY, **V2))
    generate_scenes(tmp_path / "b", dataclasses.replace(TINY, **V2, n_unlabelled=5))
    a = files(tmp_path / "a" / "VOCdevkit" / "SCENES")
    b = files(tmp_path / "b" / "VOCdevkit" / "SCENES")
    ids = split_ids(dataclasses.replace(TINY, n_unlabelled=5))
    assert ids["unlabelled"] == [f"{k:06d}" for k in range(12, 17)]
    assert "ImageSets/Main/unlabelled.txt" not in a
    assert b["ImageSets/Main/unlabelled.txt"].decode().split() == ids["unlabelled"]
    assert all(b[name] == data for name, data in a.items())  # nothing else changed
    extra = {n for n in b if n not in a and not n.startswith("ImageSets")}
    assert extra == {f"{d}/{i}.{e}" for i in ids["unlabelled"]
                     for d, e in (("JPEGImages", "jpg"), ("Annotations", "xml"))}  # fmt: skip
    ds = VOCDataset(tmp_path / "b" / "VOCdevkit" / "SCENES", "unlabelled", classes=TINY.classes)
    assert ds.ids == ids["unlabelled"]


@pytest.mark.parametrize("size", [64, 97, 256])
def test_any_image_size_renders(size):
    cfg = dataclasses.replace(TINY, image_size=size, out_of_context=1.0)
    for k in range(25):
        image, objects, scene, quality = render_scene(cfg, k)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
        assert scene in scenes_mod.SCENE_TYPES and 60 <= quality <= 90
        for o in objects:
            assert 1 <= o.box[0] <= o.box[2] <= size and 1 <= o.box[1] <= o.box[3] <= size


def test_nuisance_zero_gives_clean_flat_objects_and_more_gives_noise():
    clean = render_scene(dataclasses.replace(TINY, nuisance=0.0, clutter=0.0), 0)[0]
    noisy = render_scene(dataclasses.replace(TINY, nuisance=2.0), 0)[0]
    # neighbouring-pixel differences: flat colours without texture/noise are mostly zero
    d_clean = np.abs(np.diff(clean.astype(int), axis=1)).mean()
    d_noisy = np.abs(np.diff(noisy.astype(int), axis=1)).mean()
    assert d_noisy > 2 * d_clean


# ----------------------------------------------------------------------------- context


def boxes_by_class(ds: VOCDataset) -> list[dict[str, np.ndarray]]:
    out = []
    for im in ds:
        per: dict[str, list] = {}
        for o in im.objects:
            per.setdefault(o.name, []).append(o.box)
        out.append({k: np.array(v) for k, v in per.items()})
    return out


def test_context_rules_hold(medium):
    ds = VOCDataset(medium, "trainval", classes=SCENE_CLASSES)
    images = boxes_by_class(ds)
    s = 192
    wheels_under_cars = wheels = 0
    for per in images:
        # plates only in dining scenes: never with cars, houses or suns
        if "plate" in per:
            assert not {"car", "wheel", "house", "sun"} & per.keys()
            ys = per["plate"][:, 3]
            assert ys.max() - ys.min() < 0.2 * s  # a row on one table
        if "sun" in per:
            assert per["sun"][:, 1].min() < 0.5 * s  # high in the sky
        for wb in per.get("wheel", []):
            wheels += 1
            cx, cy = (wb[0] + wb[2]) / 2, (wb[1] + wb[3]) / 2
            for cb in per.get("car", []):
                if cb[0] - 2 <= cx <= cb[2] + 2 and abs(cy - cb[3]) < 0.1 * s:
                    wheels_under_cars += 1
                    break
    assert wheels > 10 and wheels_under_cars >= 0.8 * wheels
    present = {c for per in images for c in per}
    assert present == set(SCENE_CLASSES)


def test_round_lookalikes_share_size_range(medium):
    """Sun, ball, plate and wheel overlap in size, so size alone does not name them."""
    ds = VOCDataset(medium, "trainval", classes=SCENE_CLASSES)
    sizes: dict[str, list[float]] = {c: [] for c in ("sun", "ball", "plate", "wheel")}
    for im in ds:
        for o in im.objects:
            if o.name in sizes and not o.truncated:
                sizes[o.name].append(min(o.box[2] - o.box[0], o.box[3] - o.box[1]))
    ranges = {c: (np.percentile(v, 25), np.percentile(v, 75)) for c, v in sizes.items() if v}
    assert len(ranges) == 4
    lo = max(r[0] for r in ranges.values())
    hi = min(r[1] for r in ranges.values())
    assert lo < 2.0 * hi, ranges


# ----------------------------------------------------------------------------- config, stage


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"classes": ["sun", "moon"]}, "scenes.classes: 'moon' is not a known scene class"),
        ({"classes": ["sun", "sun"]}, "scenes.classes: ['sun', 'sun'] is not allowed"),
        ({"name": "../x"}, "scenes.name: '../x' is not a folder name"),
        ({"jpeg_quality": 50, "jpeg_quality_min": 70}, "scenes.jpeg_quality_min: 70 is above"),
        ({"nuisance": 3.0}, "scenes.nuisance: 3.0 is out of range"),
        ({"n_test": 0}, "scenes.n_test: 0 is out of range"),
        ({"cue_contrast_min": 0.7, "cue_contrast_max": 0.5}, "scenes.cue_contrast_min: 0.7 is"),
        ({"version": 3}, "scenes.version: 3 is out of range"),
    ],
)
def test_config_errors(patch, message):
    with pytest.raises(ConfigError) as err:
        build(ScenesConfig, patch, "scenes")
    assert message in str(err.value)


def test_params_yaml_scenes_section_matches_config():
    data = yaml.safe_load((Path(__file__).resolve().parent.parent / "params.yaml").read_text())
    assert set(data["scenes"]) == {f.name for f in dataclasses.fields(ScenesConfig)}
    build(ScenesConfig, data["scenes"], "scenes")


def test_stage_writes_dataset_and_metrics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = {
        "scenes": {"n_train": 3, "n_val": 1, "n_test": 2, "image_size": 96, "name": "VOC2007"},
        "data": {"scenes_root": "out/scenes"},
        "paths": {"metrics": "out/metrics"},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    metrics = run_stage("scenes", "params.yaml")
    saved = json.loads((tmp_path / "out" / "metrics" / "details" / "scenes.json").read_text())
    assert saved["images"] == {"train": 3, "val": 1, "trainval": 4, "test": 2}
    assert saved["objects"] == sum(saved["objects_per_class"].values()) > 0
    assert saved["seconds"] >= 0 and metrics["stage"] == "scenes"
    # peak memory of the stage process: at least the interpreter with numpy and torch loaded
    assert 50 < saved["peak_rss_mb"] < 24 * 1024 and 0 <= saved["children_peak_uss_mb"] < 50
    p = build(Params, params)
    assert len(open_split(p.dataset_ref, "test")) == 2
    # named VOC2007, the folder loads directly with torchvision
    assert len(VOCDetection(str(tmp_path / "out" / "scenes"), year="2007", image_set="test")) == 2


def test_relation_style_puts_the_class_only_in_the_centre_rim_relation():
    """cue_style: relation: centre and rim of any hue; the class says only which is
    lighter and which more saturated, and each relation holds for every disc drawn."""
    import cv2

    rng = np.random.default_rng(0)
    hues = {c: set() for c in scenes_mod.ROUND_CLASSES}
    for cls, (lighter, richer) in glyphs_mod.RELATIONS.items():
        for _ in range(30):
            alpha = rng.uniform(0.25, 1.0)
            item = scenes_mod.Item("round", 0, 0, 40, 36, cls=cls, cue=True,
                                   extra={"cue_alpha": alpha, "relation": True})  # fmt: skip
            (disc, rim), (inner, centre) = glyphs_mod.GLYPHS["round"](item, 40, 36, rng)
            assert disc[18, 20] == 255 and inner[18, 20] == 255 and inner[18, 1] == 0
            hsv = cv2.cvtColor(np.stack([rim, centre])[None].astype(np.float32), cv2.COLOR_RGB2HSV)
            (_, s_r, v_r), (h_c, s_c, v_c) = hsv[0]
            assert (v_c > v_r) == lighter and abs(v_c - v_r) > 0.5 * alpha, (cls, alpha)
            assert (s_c > s_r) == richer and abs(s_c - s_r) > 0.5 * alpha, (cls, alpha)
            hues[cls].add(int(h_c // 60))
    assert all(len(h) >= 4 for h in hues.values())  # any hue: colour says nothing


def test_parity_style_gives_each_class_two_opposite_attribute_combinations():
    """cue_style: parity: (lighter, richer, large centre) is the class's PARITY row or its
    opposite, both drawn; the four classes' eight combinations are all distinct, and each
    class's two are antipodal (no class is linearly apart from the rest)."""
    import cv2

    assert len({glyphs_mod.parity_attributes(c, f) for c in glyphs_mod.PARITY
                for f in (False, True)}) == 8  # fmt: skip
    rng = np.random.default_rng(1)
    seen = {c: set() for c in glyphs_mod.PARITY}
    for cls in glyphs_mod.PARITY:
        for _ in range(30):
            alpha = rng.uniform(0.25, 1.0)
            item = scenes_mod.Item("round", 0, 0, 100, 100, cls=cls, cue=True,
                                   extra={"cue_alpha": alpha, "relation": True,
                                          "parity": True})  # fmt: skip
            (disc, rim), (inner, centre) = glyphs_mod.GLYPHS["round"](item, 100, 100, rng)
            hsv = cv2.cvtColor(np.stack([rim, centre])[None].astype(np.float32), cv2.COLOR_RGB2HSV)
            (_, s_r, v_r), (_, s_c, v_c) = hsv[0]
            share = (np.asarray(inner)[50] > 0).sum() / (np.asarray(disc)[50] > 0).sum()
            assert abs(v_c - v_r) > 0.5 * alpha and abs(s_c - s_r) > 0.5 * alpha
            assert not 0.57 < share < 0.63, share  # small (0.44-0.56) or large (0.64-0.76)
            attrs = (bool(v_c > v_r), bool(s_c > s_r), bool(share > 0.6))
            assert attrs in {glyphs_mod.parity_attributes(cls, f) for f in (False, True)}
            seen[cls].add(attrs)
    assert all(len(v) == 2 for v in seen.values())  # both corners of every class drawn


def test_parity_style_config_reaches_the_glyph():
    """scenes.cue_style: parity marks version-2 discs for the parity glyph; relation stays
    unmarked (its images unchanged)."""
    from pipeline.data.scenes import items as items_mod

    cfg = ScenesConfig(version=2, cue_probability=1.0, cue_style="parity")
    item = items_mod._round_item(np.random.default_rng(0), "sun", 50, 50, 10, cfg)
    assert item.extra.get("relation") and item.extra.get("parity")
    cfg = ScenesConfig(version=2, cue_probability=1.0, cue_style="relation")
    item = items_mod._round_item(np.random.default_rng(0), "sun", 50, 50, 10, cfg)
    assert item.extra.get("relation") and "parity" not in item.extra
