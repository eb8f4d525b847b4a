"""YOLO proposals (ultralytics), and the ``yolo`` stage that trains one offline.

No detector weights ship in any package, and the paper's YOLO was trained on VOC boxes,
so with ``proposals.yolo.weights`` unset the ``yolo`` stage trains
``proposals.yolo.model`` (an untrained architecture YAML such as ``yolov8n.yaml``) on the
boxes of the dataset's SCN training split (``data.scn_split``) and writes
``<paths.proposals>/yolo/weights.pt``. The method ``yolo`` then runs that checkpoint (or
the user's ``proposals.yolo.weights``, e.g. a COCO- or VOC-trained one) on every image
and keeps the boxes, ignoring the labels.

When neither the ``proposal`` switch nor ``proposals.detect_method`` is ``yolo``, or
``proposals.yolo.weights`` is given, the stage trains nothing and writes only
``<paths.proposals>/yolo/stage.json`` (a small marker saying why), so the DVC graph
stays cheap for the other methods.

Offline and quiet: ultralytics is imported with ``YOLO_OFFLINE=true`` and a private
settings directory (``YOLO_CONFIG_DIR``) that holds a local copy of matplotlib's
DejaVu Sans under the font names ultralytics would otherwise download; training runs
with ``plots=False`` and ``amp=False`` on the CPU (no AMP-check weights), and
ultralytics' own stdout/stderr are captured and sent to this module's logger at DEBUG;
the progress shows instead on a tqdm bar and one INFO line per epoch with its losses
(an ``on_train_epoch_end`` callback). The checkpoint is saved without ultralytics' run
details (date, git state, epoch times, temporary paths), and the marker without the
training's seconds (in the stage's metrics), so a rerun writes the same bytes.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from pipeline.artifacts import YOLO_MARKER, YOLO_WEIGHTS
from pipeline.config import ConfigError, to_dict
from pipeline.errors import DataError, SkipPolicy
from pipeline.io import atomic_path, write_json
from pipeline.proposals.base import ProposalSet, clip_boxes, filter_boxes
from pipeline.provenance import code_version, sha256_file

if TYPE_CHECKING:
    from pipeline.data.voc import DatasetRef, VOCDataset
    from pipeline.proposals.config import ProposalsConfig, YoloConfig

log = logging.getLogger(__name__)

MIN_BOX_SIDE = 1.0  # detector boxes thinner than one pixel after clipping are dropped
WALL_CLOCK_KEYS = ("train_seconds",)  # in the stage's metrics only, not in the marker
_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")


# --------------------------------------------------------------------------- ultralytics


def _config_dir() -> Path:
    """A private, writable ultralytics settings directory (never the user's home)."""
    return Path(tempfile.gettempdir()) / f"scn-ultralytics-{os.getuid()}"


def _install_fonts(config_dir: Path) -> None:
    """Place a local font under the names ultralytics would download (dataset checks)."""
    from matplotlib import font_manager

    src = Path(font_manager.findfont("DejaVu Sans", fallback_to_default=True))
    config_dir.mkdir(parents=True, exist_ok=True)
    for name in _FONT_NAMES:
        dst = config_dir / name
        if not dst.exists():
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)


def import_ultralytics() -> Any:
    """Import ultralytics offline, with a private settings directory and quiet logging."""
    os.environ.setdefault("YOLO_CONFIG_DIR", str(_config_dir()))
    os.environ["YOLO_OFFLINE"] = "true"  # no DNS probe, no hub, no analytics
    os.environ.setdefault("YOLO_VERBOSE", "False")
    import ultralytics
    from ultralytics.utils import USER_CONFIG_DIR

    _install_fonts(Path(USER_CONFIG_DIR))  # where ultralytics' check_font looks first
    return ultralytics


@contextlib.contextmanager
def _captured_output(what: str) -> Iterator[None]:
    """Keep ultralytics' prints and progress bars out of the library's output."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield
    finally:
        text = buf.getvalue().strip()
        if text:
            log.debug("%s output:\n%s", what, text[-20000:])


def resolve_device(device: str) -> str:
    """The project's device rule (:func:`pipeline.devices.resolve_device`) in ultralytics'
    spelling: ``"cpu"`` or a CUDA index such as ``"0"``."""
    from pipeline.devices import resolve_device as resolve

    dev = resolve(device, "proposals.yolo.device")
    return "cpu" if dev.type == "cpu" else str(dev.index or 0)


# --------------------------------------------------------------------------- training


def _epoch_progress(bar: tqdm) -> Callable[[Any], None]:
    """An ultralytics ``on_train_epoch_end`` callback: each epoch's mean training losses
    on ``bar`` and in the log (ultralytics' own output is captured, so it shows nothing)."""

    def on_train_epoch_end(trainer: Any) -> None:
        losses = trainer.label_loss_items(trainer.tloss, prefix="train")
        text = ", ".join(f"{k.removeprefix('train/')} {float(v):.4f}" for k, v in losses.items())
        bar.set_postfix_str(text, refresh=False)
        bar.update(1)
        log.info("yolo epoch %d/%d: %s", trainer.epoch + 1, trainer.epochs, text)

    return on_train_epoch_end


def to_yolo_labels(boxes: np.ndarray, classes: np.ndarray, width: int, height: int) -> np.ndarray:
    """(K, 4) project-convention boxes -> (K, 5) YOLO rows ``class cx cy w h`` (normalised)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 / width  # (K,)
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 / height  # (K,)
    w = (boxes[:, 2] - boxes[:, 0]) / width  # (K,)
    h = (boxes[:, 3] - boxes[:, 1]) / height  # (K,)
    return np.column_stack([np.asarray(classes, dtype=np.float64), cx, cy, w, h])  # (K, 5)


def write_yolo_dataset(dataset: VOCDataset, root: Path) -> tuple[Path, int]:
    """Write ``dataset`` in YOLO layout under ``root``; return (data YAML, number of boxes).

    Images are symlinked (copied where links are not possible); labels hold every
    object, difficult ones included, with its class index. The same images serve as the
    validation set: the detector only needs to fit the training boxes.
    """
    import yaml

    images, labels = root / "images" / "train", root / "labels" / "train"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    n_boxes = 0
    for im in dataset:
        dst = images / f"{im.id}{im.path.suffix.lower()}"
        try:
            dst.symlink_to(im.path.resolve())
        except OSError:
            shutil.copyfile(im.path, dst)
        boxes = im.boxes()
        cls = np.array([dataset.classes.index(o.name) for o in im.objects], dtype=np.int64)
        rows = to_yolo_labels(boxes, cls, im.width, im.height)
        n_boxes += len(rows)
        (labels / f"{im.id}.txt").write_text(
            "".join(f"{int(r[0])} {r[1]:.6f} {r[2]:.6f} {r[3]:.6f} {r[4]:.6f}\n" for r in rows)
        )
    data_yaml = root / "data.yaml"
    data_yaml.write_text(
        yaml.safe_dump(
            {
                "path": str(root),
                "train": "images/train",
                "val": "images/train",
                "names": dict(enumerate(dataset.classes)),
            }
        )
    )
    return data_yaml, n_boxes


def _save_without_run_details(src: Path, out: Path, tmp: Path) -> None:
    """Copy ultralytics' checkpoint ``src`` to ``out`` minus what differs from run to run
    with the same weights: the date, the git state, the epochs' wall-clock ``time`` and the
    temporary folder ``tmp`` in the training arguments' paths."""
    import torch

    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    ckpt["date"] = None
    ckpt.pop("git", None)
    if isinstance(ckpt.get("train_results"), dict):
        ckpt["train_results"] = {k: v for k, v in ckpt["train_results"].items() if k != "time"}

    def untemp(args: Any) -> Any:
        if not isinstance(args, dict):
            return args
        return {
            k: v.replace(str(tmp), "<tmp>") if isinstance(v, str) else v for k, v in args.items()
        }

    ckpt["train_args"] = untemp(ckpt.get("train_args"))
    for key in ("model", "ema"):  # the modules carry the training arguments too
        if hasattr(ckpt.get(key), "args"):
            ckpt[key].args = untemp(ckpt[key].args)
    torch.save(ckpt, out)


def train_yolo(
    dataset: VOCDataset, cfg: YoloConfig, out: Path, seed: int, **overrides: Any
) -> dict[str, Any]:
    """Train ``cfg.model`` from scratch on ``dataset``'s boxes; write the checkpoint to ``out``.

    Returns training metrics (epochs, images, boxes, seconds, final losses and the
    ultralytics validation figures on the training images).
    """
    if len(dataset) == 0:
        raise DataError(
            dataset.root, f"split {dataset.split!r} has no usable images to train YOLO on"
        )
    import_ultralytics()
    from ultralytics import YOLO

    device = resolve_device(cfg.device)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scn-yolo-") as tmp:
        tmp = Path(tmp)
        data_yaml, n_boxes = write_yolo_dataset(dataset, tmp / "data")
        log.info(
            "training %s for %d epochs at %d px on %d images (%d boxes), device %s",
            cfg.model,
            cfg.epochs,
            cfg.imgsz,
            len(dataset),
            n_boxes,
            device,
        )
        # the bar writes to the real stderr: made before ultralytics' output is captured
        bar = tqdm(total=cfg.epochs, desc="yolo train", unit="epoch", leave=False, file=sys.stderr)
        with bar, _captured_output("ultralytics train"):
            try:
                model = YOLO(cfg.model, task="detect")
            except FileNotFoundError as err:
                raise ConfigError(
                    f"proposals.yolo.model: {cfg.model!r} is not a known architecture YAML "
                    f"(e.g. yolov8n.yaml, yolo11n.yaml): {err}"
                ) from None
            model.add_callback("on_train_epoch_end", _epoch_progress(bar))
            model.train(
                data=str(data_yaml),
                epochs=cfg.epochs,
                imgsz=cfg.imgsz,
                batch=cfg.batch,
                device=device,
                workers=cfg.workers,
                single_cls=cfg.single_class,
                project=str(tmp / "runs"),
                name="train",
                exist_ok=True,
                seed=seed,
                deterministic=True,
                pretrained=False,
                amp=False if device == "cpu" else cfg.amp,
                plots=False,
                val=False,  # ultralytics still validates once after the final epoch
                save=True,
                verbose=False,
                patience=0,
                warmup_epochs=cfg.warmup_epochs,
                mosaic=cfg.mosaic,
                close_mosaic=0,
                **overrides,
            )
        trainer = model.trainer
        last = Path(trainer.last)
        if not last.is_file():
            raise RuntimeError(f"ultralytics wrote no checkpoint at {last}")  # should not happen
        out.parent.mkdir(parents=True, exist_ok=True)
        _save_without_run_details(last, out, tmp)
        results = {k: float(v) for k, v in (trainer.metrics or {}).items()}
        losses = trainer.label_loss_items(trainer.tloss, prefix="train")
    seconds = time.perf_counter() - start
    log.info("YOLO trained in %.0fs: %s", seconds, results)
    return {
        "trained": True,
        "model": cfg.model,
        "epochs": cfg.epochs,
        "imgsz": cfg.imgsz,
        "device": device,
        "images": len(dataset),
        "boxes": n_boxes,
        "train_seconds": round(seconds, 1),
        "train_losses": {k: round(float(v), 4) for k, v in losses.items()},
        "fit": {
            k.replace("metrics/", "").replace("(B)", ""): round(v, 4) for k, v in results.items()
        },
    }


def skip_reason(proposal: str, cfg: ProposalsConfig) -> str:
    """Why the ``yolo`` stage trains nothing ("" when it must train).

    It trains when ``proposal`` or ``proposals.detect_method`` is ``yolo`` and no
    ``proposals.yolo.weights`` are given.
    """
    if cfg.yolo.weights is not None:
        return f"proposals.yolo.weights is given ({cfg.yolo.weights})"
    if "yolo" not in (proposal, cfg.detect_method):
        return (
            f"proposal is {proposal!r} and proposals.detect_method is "
            f"{cfg.detect_method!r}, neither is 'yolo'"
        )
    return ""


def run_yolo(
    dataset_ref: DatasetRef,
    proposal: str,
    cfg: ProposalsConfig,
    split: str,
    out_dir: Path,
    provenance: dict[str, Any],
) -> dict:
    """DVC stage ``yolo``: train the proposal detector on ``split`` into ``out_dir`` when it
    is needed (:func:`skip_reason`), else write a marker only. ``provenance`` (the params
    the stage depends on) goes into the marker of a trained detector."""
    from pipeline.data.voc import open_split
    from pipeline.seed import seed_everything

    marker: dict[str, Any] = {
        "code_version": code_version(),
        "split": split,
        "dataset": dataset_ref.name,
        "params": provenance,
    }
    reason = skip_reason(proposal, cfg)
    if reason:
        log.info("yolo: nothing to train (%s); writing a marker only", reason)
        metrics = {"trained": False, "reason": reason}
        # The marker's content must not depend on which non-YOLO method is chosen or on
        # the code version: it is a dependency of the proposal stages, and a changed
        # marker would rerun detect_proposals on every `proposal` switch.
        stable = {"trained": False, "weights": to_dict(cfg.yolo.weights)}
        with atomic_path(out_dir) as tmp:
            tmp.mkdir()
            write_json(tmp / YOLO_MARKER, stable)
        return metrics
    seed_everything(cfg.seed)
    dataset = open_split(dataset_ref, split, stage="yolo")
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        metrics = train_yolo(dataset, cfg.yolo, tmp / YOLO_WEIGHTS, seed=cfg.seed)
        metrics["weights_sha256"] = sha256_file(tmp / YOLO_WEIGHTS)
        metrics["skipped"] = dataset.policy.metrics()
        # the marker is a dependency of the proposal stages: no wall-clock figure in it
        stable = {k: v for k, v in metrics.items() if k not in WALL_CLOCK_KEYS}
        write_json(tmp / YOLO_MARKER, {**marker, **stable})
    return metrics


# --------------------------------------------------------------------------- proposals


def resolve_weights(cfg: YoloConfig, yolo_dir: Path | None = None) -> Path:
    """The checkpoint the method runs: the user's ``weights``, or the ``yolo`` stage's
    in ``yolo_dir`` (``PathsConfig.yolo_dir``)."""
    if cfg.weights is not None:
        path = Path(cfg.weights)
        if not path.is_file():
            raise DataError(
                path, "proposals.yolo.weights: checkpoint not found", kind="missing_weights"
            )
        return path
    path = Path(yolo_dir or "<paths.proposals>/yolo") / YOLO_WEIGHTS
    if yolo_dir is None or not path.is_file():
        raise DataError(
            path,
            "no trained YOLO weights; run the `yolo` stage with proposal=yolo "
            "(dvc repro yolo) or set proposals.yolo.weights",
            kind="missing_weights",
        )
    return path


def load_detector(path: Path) -> Any:
    """An ultralytics YOLO model from a checkpoint; DataError naming the file if it fails."""
    import_ultralytics()
    from ultralytics import YOLO

    try:
        with _captured_output("ultralytics load"):
            return YOLO(str(path), task="detect")
    except Exception as err:  # ultralytics raises many types for a bad checkpoint
        raise DataError(
            path, f"not a loadable YOLO checkpoint: {err}", kind="bad_weights"
        ) from None


def detect_boxes(
    model: Any,
    paths: list[Path],
    sizes: list[tuple[int, int]],
    cfg: YoloConfig,
    device: str,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Run ``model`` on a batch of image files; (K, 4) boxes and (K,) scores per image.

    Labels are ignored (class-agnostic NMS); boxes are clipped to the image and those
    thinner than a pixel dropped; at most ``cfg.max_det`` per image, best first.
    """
    with _captured_output("ultralytics predict"):
        results = model.predict(
            [str(p) for p in paths],
            conf=cfg.conf,
            max_det=cfg.max_det,
            imgsz=cfg.imgsz,
            device=device,
            batch=len(paths),
            agnostic_nms=True,
            verbose=False,
            save=False,
        )
    boxes, scores = [], []
    for res, (width, height) in zip(results, sizes, strict=True):
        xyxy = res.boxes.xyxy.cpu().numpy().astype(np.float32).reshape(-1, 4)  # (K, 4)
        conf = res.boxes.conf.cpu().numpy().astype(np.float32).reshape(-1)  # (K,)
        if tuple(res.orig_shape) != (height, width):
            raise DataError(
                paths[len(boxes)],
                f"decoded as {res.orig_shape[1]}x{res.orig_shape[0]}, annotated {width}x{height}",
                kind="size_mismatch",
            )
        b, s = filter_boxes(
            clip_boxes(xyxy, width, height), conf, min_size=MIN_BOX_SIDE, max_boxes=cfg.max_det
        )
        boxes.append(b)
        scores.append(s)
    return boxes, scores


def propose(dataset: VOCDataset, cfg: ProposalsConfig, split: str) -> ProposalSet:
    """YOLO detections of every image of ``dataset`` as proposals (labels ignored)."""
    cfg = cfg.yolo
    weights = resolve_weights(cfg)  # the stage passes the yolo stage's weights when unset
    model = load_detector(weights)
    device = resolve_device(cfg.device)
    policy = SkipPolicy(
        on_error=dataset.policy.on_error,
        max_skip_fraction=dataset.policy.max_skip_fraction,
        stage="proposals",
    )
    images = list(dataset)
    kept, boxes, scores = [], [], []
    start = time.perf_counter()
    bar = tqdm(total=len(images), desc=f"yolo {split}", unit="img", leave=False)
    for lo in range(0, len(images), cfg.batch):
        chunk = images[lo : lo + cfg.batch]
        try:
            b, s = detect_boxes(
                model,
                [im.path for im in chunk],
                [(im.width, im.height) for im in chunk],
                cfg,
                device,
            )
            kept.extend(chunk)
            boxes.extend(b)
            scores.extend(s)
        except DataError:
            # one bad image spoils its batch: redo the batch one image at a time
            for im in chunk:
                try:
                    b, s = detect_boxes(model, [im.path], [(im.width, im.height)], cfg, device)
                except DataError as err:
                    policy.handle(err)
                    continue
                kept.append(im)
                boxes.extend(b)
                scores.extend(s)
        bar.update(len(chunk))
    bar.close()
    policy.check(len(images))
    seconds = time.perf_counter() - start
    provenance = {
        "method": "yolo",
        "edge_source": "",
        "thresholds": {"conf": cfg.conf, "max_det": cfg.max_det, "imgsz": cfg.imgsz},
        "weights_sha256": sha256_file(weights),
        "weights": str(weights),
    }
    log.info(
        "yolo %s: %d images, %d boxes (%.1f per image), %.1f img/s",
        split,
        len(kept),
        sum(len(b) for b in boxes),
        sum(len(b) for b in boxes) / max(len(kept), 1),
        len(images) / max(seconds, 1e-9),
    )
    return ProposalSet.from_images(kept, boxes, scores, provenance, policy=policy, seconds=seconds)


def read_marker(yolo_dir: Path) -> dict[str, Any]:
    """The ``yolo`` stage's ``stage.json`` in ``yolo_dir`` (for inspection and tests)."""
    path = Path(yolo_dir) / YOLO_MARKER
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(
            path, "yolo stage marker not found; run the yolo stage", kind="missing"
        ) from None
