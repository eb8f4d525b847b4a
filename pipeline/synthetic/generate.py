"""The synthetic (circle, X) pair dataset of paper section 4.1.

Each pair is drawn on its own black canvas: a white circle (the bottom patch, the input)
and a white square, a white triangle or nothing (a black patch, the top patch, the
target). See :class:`pipeline.synthetic.config.SyntheticConfig` for the geometry rules.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np

from pipeline.boxes import corner_offsets
from pipeline.errors import DataError
from pipeline.io import atomic_path
from pipeline.synthetic.config import SyntheticConfig

log = logging.getLogger(__name__)

KINDS = ("square", "triangle", "black")  # index = value of ``SyntheticPairs.kind``
SQUARE, TRIANGLE, BLACK = 0, 1, 2
WHITE = (255, 255, 255)
_MAX_TRIES = 10_000
FIELDS = ("top", "bottom", "top_pixels", "top_box", "bottom_box", "offset", "kind", "split")
_AA_SHIFT = 4  # cv2 sub-pixel bits for anti-aliased drawing


@dataclass(frozen=True)
class SyntheticPairs:
    """All pairs of the experiment; rows are pairs, ``split`` 0 = train, 1 = test."""

    top: np.ndarray  # (N, S, S, 3) uint8, the target patch i
    bottom: np.ndarray  # (N, S, S, 3) uint8, the circle patch j
    top_pixels: np.ndarray  # (N, P, P, 3) uint8, the target patch at ``pixel_size`` (Fig. 4)
    top_box: np.ndarray  # (N, 4) float32 crop box x1, y1, x2, y2 in the canvas
    bottom_box: np.ndarray  # (N, 4) float32
    offset: np.ndarray  # (N, 8) float32 corner differences / canvas size
    kind: np.ndarray  # (N,) int8 into KINDS
    split: np.ndarray  # (N,) int8
    canvas_size: int

    def __len__(self) -> int:
        return len(self.kind)

    def subset(self, split: int) -> SyntheticPairs:
        m = self.split == split
        return SyntheticPairs(
            self.top[m], self.bottom[m], self.top_pixels[m], self.top_box[m], self.bottom_box[m],
            self.offset[m], self.kind[m], self.split[m], self.canvas_size,
        )  # fmt: skip


def _centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _grow(box: tuple[int, int, int, int], margin: float) -> tuple[int, int, int, int]:
    m = math.ceil(margin * (box[2] - box[0]))
    return box[0] - m, box[1] - m, box[2] + m, box[3] + m


def _disjoint(a: tuple[int, ...], b: tuple[int, ...], gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def sample_layout(
    kind: int, cfg: SyntheticConfig, rng: np.random.Generator
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Object boxes (circle, other) of one pair of ``kind``, by rejection sampling.

    Boxes are integer x1, y1, x2, y2 squares; their crop boxes (grown by
    ``crop_margin``) lie inside the canvas and are at least ``min_gap`` apart.
    """
    c, tol = cfg.canvas_size, cfg.axis_tolerance
    pad = math.ceil(cfg.crop_margin * cfg.max_size)
    for _ in range(_MAX_TRIES):
        s_c, s_o = rng.integers(cfg.min_size, cfg.max_size + 1, size=2)
        xc, yc = rng.integers(pad, c - pad - s_c + 1, size=2)
        circle = (int(xc), int(yc), int(xc + s_c), int(yc + s_c))
        cx, cy = _centre(circle)
        lo, hi = pad, c - pad - s_o  # admissible top-left corner of the other box
        if kind == SQUARE:  # same row (|dy| <= tol), anywhere along x
            y = round(cy + rng.uniform(-tol, tol) - s_o / 2)
            x = int(rng.integers(lo, hi + 1))
        elif kind == TRIANGLE:  # same column (|dx| <= tol), anywhere along y
            x = round(cx + rng.uniform(-tol, tol) - s_o / 2)
            y = int(rng.integers(lo, hi + 1))
        else:
            x, y = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        if not (lo <= x <= hi and lo <= y <= hi):
            continue
        other = (x, y, x + int(s_o), y + int(s_o))
        if not _disjoint(
            _grow(circle, cfg.crop_margin), _grow(other, cfg.crop_margin), cfg.min_gap
        ):
            continue
        ox, oy = _centre(other)
        dx, dy = abs(ox - cx), abs(oy - cy)
        if kind == SQUARE and not (dy <= tol < dx and (cfg.two_sided or ox > cx)):
            continue  # one-sided: the square right of the circle
        if kind == TRIANGLE and not (dx <= tol < dy and (cfg.two_sided or oy < cy)):
            continue  # one-sided: the triangle above the circle
        if kind == BLACK and cfg.black_off_axis and not (dx > tol and dy > tol):
            continue
        return circle, other
    raise DataError(
        f"synthetic: no {KINDS[kind]} layout found in {_MAX_TRIES} tries for canvas_size="
        f"{c}, sizes {cfg.min_size}..{cfg.max_size}, axis_tolerance={tol}; allowed: a larger "
        "canvas_size or smaller objects"
    )


def draw(canvas: np.ndarray, kind: str, box: tuple[int, int, int, int]) -> None:
    """Draw a filled, anti-aliased white ``kind`` (circle|square|triangle|black) in ``box``."""
    x1, y1, x2, y2 = box
    f = 1 << _AA_SHIFT

    def fx(v: float) -> int:
        return round(v * f)

    if kind == "circle":
        centre = (fx((x1 + x2) / 2 - 0.5), fx((y1 + y2) / 2 - 0.5))
        cv2.circle(canvas, centre, fx((x2 - x1) / 2 - 0.5), WHITE, -1, cv2.LINE_AA, _AA_SHIFT)
    elif kind == "square":
        canvas[y1:y2, x1:x2] = WHITE
    elif kind == "triangle":  # apex at the top centre, base along the bottom edge
        pts = np.array(
            [[fx((x1 + x2) / 2 - 0.5), fx(y1)], [fx(x1), fx(y2 - 1)], [fx(x2 - 1), fx(y2 - 1)]]
        )
        cv2.fillPoly(canvas, [pts.astype(np.int32)], WHITE, cv2.LINE_AA, _AA_SHIFT)
    elif kind != "black":
        raise ValueError(f"kind: {kind!r} is unknown; allowed: circle, {', '.join(KINDS)}")


def crop(canvas: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The integer ``box`` of ``canvas`` resized to (S, S, 3) uint8 by area averaging.

    (For integer boxes this is what ``pipeline.backbones.preprocess.crop_resize`` computes
    when downscaling; cv2 is ~100x faster per call than a torch RoIAlign on one canvas.)
    """
    x1, y1, x2, y2 = box
    return cv2.resize(canvas[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_AREA)


def generate(cfg: SyntheticConfig, n_canvases: int = 0) -> tuple[SyntheticPairs, list[np.ndarray]]:
    """Draw every pair, crop its two patches, split train/test; deterministic for ``cfg.seed``.

    Also returns up to ``n_canvases`` full canvases per kind (crop boxes outlined) for a
    figure of training samples.
    """
    rng = np.random.default_rng([cfg.seed, 7])
    kinds = np.repeat(
        np.array([SQUARE, TRIANGLE, BLACK], np.int8), [cfg.n_square, cfg.n_triangle, cfg.n_black]
    )
    c, s = cfg.canvas_size, cfg.input_size
    n = len(kinds)
    top = np.zeros((n, s, s, 3), np.uint8)
    bottom = np.zeros((n, s, s, 3), np.uint8)
    pixels = np.zeros((n, cfg.pixel_size, cfg.pixel_size, 3), np.uint8)
    top_box = np.zeros((n, 4), np.float32)
    bottom_box = np.zeros((n, 4), np.float32)
    canvases: list[np.ndarray] = []
    shown = dict.fromkeys(range(len(KINDS)), 0)
    for i, kind in enumerate(kinds):
        circle, other = sample_layout(int(kind), cfg, rng)
        canvas = np.zeros((c, c, 3), np.uint8)
        draw(canvas, "circle", circle)
        draw(canvas, KINDS[kind], other)
        bbox, tbox = _grow(circle, cfg.crop_margin), _grow(other, cfg.crop_margin)
        bottom[i], top[i] = crop(canvas, bbox, s), crop(canvas, tbox, s)
        pixels[i] = crop(canvas, tbox, cfg.pixel_size)
        bottom_box[i], top_box[i] = bbox, tbox
        if shown[int(kind)] < n_canvases:
            shown[int(kind)] += 1
            shot = canvas.copy()
            cv2.rectangle(shot, bbox[:2], (bbox[2] - 1, bbox[3] - 1), (0, 160, 255), 1)
            cv2.rectangle(shot, tbox[:2], (tbox[2] - 1, tbox[3] - 1), (255, 80, 0), 1)
            canvases.append(shot)
    scale = c if cfg.offset_scale == "image" else 1
    offset = corner_offsets(top_box, bottom_box, scale, scale)  # (N, 8)
    split = np.zeros(n, np.int8)
    split[rng.permutation(n)[: cfg.n_test]] = 1
    pairs = SyntheticPairs(top, bottom, pixels, top_box, bottom_box, offset, kinds, split, c)
    log.info(
        "synthetic pairs: %d (%s), %d train / %d test",
        n,
        ", ".join(f"{int((kinds == k).sum())} {name}" for k, name in enumerate(KINDS)),
        int((split == 0).sum()),
        int((split == 1).sum()),
    )
    return pairs, canvases


def write_pairs(path: str | Path, pairs: SyntheticPairs, attrs: dict) -> None:
    """Write the dataset to HDF5 atomically (one dataset per field, gzip)."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for name in FIELDS:
                arr = getattr(pairs, name)
                f.create_dataset(name, data=arr, compression="gzip" if arr.ndim == 4 else None)
            f.attrs["canvas_size"] = pairs.canvas_size
            f.attrs["kinds"] = json.dumps(KINDS)
            for key, value in attrs.items():
                f.attrs[key] = value


def read_pairs(path: str | Path) -> SyntheticPairs:
    """Read a file written by :func:`write_pairs`; DataError naming the file when malformed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: synthetic dataset not found")
    try:
        with h5py.File(path, "r") as f:
            fields = {k: f[k][()] for k in FIELDS}
            canvas_size = int(f.attrs["canvas_size"])
    except (OSError, KeyError) as err:
        raise DataError(f"{path}: not a synthetic dataset ({err})") from err
    return SyntheticPairs(**fields, canvas_size=canvas_size)
