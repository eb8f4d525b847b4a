"""The embedded dataset: generated scenes in exact PASCAL VOC layout (stage ``scenes``).

No annotated real dataset loads offline, so the project draws its own. The rules are
fixed from the principles in docs/scenes.md (REFERENCE.md section 7), never tuned
against evaluation results:

* context: each class lives in a scene type and at a place relative to other objects
  (a wheel under a car, plates in a row on a table, a sun beside clouds high in the
  sky), so a patch predicts what lies around it and where;
* nuisance: colour, texture, size, rotation, blur, noise, occlusion, clutter and JPEG
  quality are drawn independently per object (or per image), so they cannot be
  predicted from a neighbour and are prominent in ImageNet features;
* look-alikes: sun, ball, plate and wheel are the same textured disc; only a detail
  drawn with probability ``cue_probability`` (rays, segments, rim, tyre) and their
  context tell them apart, so a crop classifier is not saturated.

Every image ``k`` draws from its own stream ``SeedSequence([seed, k])``: the same
seed gives byte-identical JPEGs and XML files, independent of the split sizes.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from pipeline.data.config import SCENE_CLASSES, ScenesConfig
from pipeline.io import atomic_path
from pipeline.provenance import code_version

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "trainval", "test")
SCENE_TYPES = ("street", "park", "dining")
SCENE_WEIGHTS = (0.35, 0.35, 0.30)
ROUND_CLASSES = ("sun", "ball", "plate", "wheel")
MIN_VISIBLE_PIXELS = 6  # an object with fewer unoccluded pixels is not annotated

# Relative size (fraction of the image side) of each class when placed out of context.
FREE_SIZE = {
    "sun": (0.09, 0.18),
    "cloud": (0.12, 0.26),
    "bird": (0.06, 0.12),
    "tree": (0.16, 0.32),
    "house": (0.2, 0.32),
    "window": (0.07, 0.14),
    "car": (0.2, 0.34),
    "wheel": (0.05, 0.11),
    "ball": (0.06, 0.16),
    "plate": (0.07, 0.15),
}


# ----------------------------------------------------------------------------- items


@dataclass
class Item:
    """One thing to draw: a class object (``cls``) or unlabelled scenery (``cls=None``).

    ``x, y, w, h`` is the nominal box of the glyph before rotation (image pixels);
    ``kind`` names the glyph; ``angle`` rotates it about its centre (degrees).
    """

    kind: str
    x: float
    y: float
    w: float
    h: float
    cls: str | None = None
    angle: float = 0.0
    cue: bool = False
    extra: dict = field(default_factory=dict)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _colour(rng: np.random.Generator) -> np.ndarray:
    """Any hue, broad saturation and value: colour carries no class information."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(40, 255), rng.uniform(70, 255)]]])
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255


def _round_item(rng, cls: str, cx: float, cy: float, r: float, cue_p: float) -> Item:
    """A disc of class ``cls`` centred at (cx, cy), aspect jittered the same for all."""
    aspect = _u(rng, 0.82, 1.0)
    w, h = 2 * r, 2 * r * aspect
    if rng.random() < 0.5:
        w, h = h, w
    cue = bool(rng.random() < cue_p)
    pad = 1.45 if cls == "sun" and cue else 1.0  # rays reach beyond the disc
    return Item(
        "round",
        cx - w * pad / 2,
        cy - h * pad / 2,
        w * pad,
        h * pad,
        cls=cls,
        angle=_u(rng, 0, 360),
        cue=cue,
    )


# ----------------------------------------------------------------------------- layouts


def _sky_objects(rng, s: float, horizon: float, cfg: ScenesConfig, p_sun: float) -> list[Item]:
    """Sun high in the sky with clouds beside it; clouds in a row; a flock of birds."""
    items: list[Item] = []
    clouds_y = _u(rng, 0.06, 0.3) * horizon
    if rng.random() < p_sun:
        r = _u(rng, 0.045, 0.085) * s
        cx, cy = _u(rng, 0.1, 0.9) * s, _u(rng, 0.1, 0.32) * horizon + r
        items.append(_round_item(rng, "sun", cx, cy, r, cfg.cue_probability))
        if rng.random() < 0.6:  # a cloud half in front of the sun, beside it
            cw = _u(rng, 0.14, 0.26) * s
            ch = cw * _u(rng, 0.4, 0.6)
            side = 1 if rng.random() < 0.5 else -1
            ccx = cx + side * (r * _u(rng, 0.3, 0.9) + cw / 2 * _u(rng, 0.4, 0.9))
            items.append(
                Item("cloud", ccx - cw / 2, cy + r * _u(rng, -0.3, 0.5) - ch / 2, cw, ch, "cloud")
            )
            clouds_y = cy - ch / 2
    n_clouds = int(rng.integers(0, 3))
    x = _u(rng, 0.0, 0.4) * s
    for _ in range(n_clouds):  # a row: similar heights, spaced horizontally
        cw = _u(rng, 0.12, 0.26) * s
        ch = cw * _u(rng, 0.35, 0.6)
        y = clouds_y + _u(rng, -0.05, 0.05) * s
        items.append(Item("cloud", x, max(y, -0.2 * ch), cw, ch, "cloud"))
        x += cw + _u(rng, 0.05, 0.3) * s
        if x > s:
            break
    if rng.random() < 0.45:  # a flock: 2-5 birds in a loose line, below the clouds
        n = int(rng.integers(2, 6))
        bw = _u(rng, 0.06, 0.1) * s
        fx, fy = _u(rng, 0.05, 0.6) * s, _u(rng, 0.3, 0.75) * horizon
        slope = _u(rng, -0.4, 0.4)
        for k in range(n):
            w = bw * _u(rng, 0.85, 1.2)
            dx = k * bw * 1.5
            items.append(
                Item(
                    "bird",
                    fx + dx,
                    fy + slope * dx + _u(rng, -0.3, 0.3) * bw,
                    w,
                    w * _u(rng, 0.55, 0.8),
                    "bird",
                    angle=_u(rng, -20, 20),
                )
            )
    return items


def _tree(rng, s: float, x: float, ground: float) -> Item:
    h = _u(rng, 0.22, 0.4) * s
    w = h * _u(rng, 0.45, 0.7)
    return Item("tree", x, ground - h, w, h, "tree", extra={"conifer": bool(rng.random() < 0.4)})


def _house(rng, s: float, x: float, ground: float) -> list[Item]:
    """A house standing on the ground line with a grid of windows on its body."""
    w = _u(rng, 0.2, 0.32) * s
    h = w * _u(rng, 0.9, 1.3)
    roof = _u(rng, 0.3, 0.42)
    items = [Item("house", x, ground - h, w, h, "house", extra={"roof": roof})]
    body_top = ground - h * (1 - roof)
    rows, cols = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    ww = w * _u(rng, 0.18, 0.26)
    wh = ww * _u(rng, 0.9, 1.3)
    body_h = h * (1 - roof)
    for r in range(rows):
        for c in range(cols):
            cx = x + w * (c + 1) / (cols + 1) + (0.12 * w if cols == 1 else 0)
            cy = body_top + body_h * (r + 0.7) / (rows + 1.2)
            items.append(Item("window", cx - ww / 2, cy - wh / 2, ww, wh, "window"))
    dw = w * 0.16
    items.append(Item("door", x + w * 0.18, ground - body_h * 0.45, dw, body_h * 0.45))
    return items


def _car(rng, s: float, x: float, ground: float, cue_p: float) -> list[Item]:
    """A car on the road with its two wheels on the bottom edge of the body."""
    w = _u(rng, 0.22, 0.36) * s
    h = w * _u(rng, 0.4, 0.55)
    r = w * _u(rng, 0.1, 0.15)
    body_bottom = ground - r * 0.9
    items = [Item("car", x, body_bottom - h, w, h, "car", angle=_u(rng, -4, 4))]
    for fx in (_u(rng, 0.17, 0.25), _u(rng, 0.75, 0.83)):
        items.append(_round_item(rng, "wheel", x + fx * w, body_bottom, r, cue_p))
    return items


def _layout_street(rng, s: float, cfg: ScenesConfig) -> tuple[float, list[Item]]:
    horizon = _u(rng, 0.42, 0.55) * s
    items = [Item("road", 0, horizon + _u(rng, 0.12, 0.2) * s, s, s)]
    items += _sky_objects(rng, s, horizon, cfg, p_sun=0.5)
    x = _u(rng, -0.1, 0.15) * s
    while x < s * 0.9:  # houses and trees alternate along the ground line
        ground = horizon + _u(rng, 0.0, 0.04) * s
        if rng.random() < 0.6:
            house = _house(rng, s, x, ground)
            items += house
            x += house[0].w + _u(rng, 0.02, 0.12) * s
        else:
            tree = _tree(rng, s, x, ground)
            items.append(tree)
            x += tree.w + _u(rng, 0.02, 0.1) * s
    n_cars = int(rng.integers(1, 3))
    for k in range(n_cars):
        ground = _u(rng, 0.82, 0.97) * s
        x = (k + _u(rng, 0.0, 0.35)) * s / n_cars
        items += _car(rng, s, x, ground, cfg.cue_probability)
    return horizon, items


def _layout_park(rng, s: float, cfg: ScenesConfig) -> tuple[float, list[Item]]:
    horizon = _u(rng, 0.42, 0.58) * s
    items = _sky_objects(rng, s, horizon, cfg, p_sun=0.65)
    if rng.random() < 0.3:  # a house in the distance
        items += _house(rng, s * 0.75, _u(rng, 0.0, 0.7) * s, horizon + 0.02 * s)
    trees = []
    for _ in range(int(rng.integers(1, 4))):
        ground = horizon + _u(rng, 0.05, 0.3) * s
        trees.append(_tree(rng, s, _u(rng, -0.05, 0.85) * s, ground))
    trees.sort(key=lambda t: t.y + t.h)  # far trees first
    items += trees
    for t in trees:
        if rng.random() < 0.3:  # a bird perched on the crown
            bw = _u(rng, 0.05, 0.08) * s
            items.append(
                Item("bird", t.x + t.w * _u(rng, 0.3, 0.6), t.y - bw * 0.4, bw, bw * 0.6, "bird")
            )
    for _ in range(int(rng.integers(1, 3))):  # balls on the grass, often by a tree
        r = _u(rng, 0.03, 0.075) * s
        if trees and rng.random() < 0.6:
            t = trees[int(rng.integers(len(trees)))]
            side = t.x - r * _u(rng, 1.0, 2.5) if rng.random() < 0.5 else t.x + t.w + r * 1.2
            cx, cy = side, t.y + t.h - r + _u(rng, 0.0, 0.04) * s
        else:
            cx, cy = _u(rng, 0.05, 0.95) * s, _u(rng, horizon / s + 0.08, 0.95) * s
        items.append(_round_item(rng, "ball", cx, cy, r, cfg.cue_probability))
    return horizon, items


def _layout_dining(rng, s: float, cfg: ScenesConfig) -> tuple[float, list[Item]]:
    horizon = _u(rng, 0.55, 0.7) * s
    items: list[Item] = []
    table_w = _u(rng, 0.5, 0.85) * s
    table_x = _u(rng, 0.0, 1.0) * (s - table_w)
    table_top = horizon + _u(rng, -0.08, 0.05) * s
    for _ in range(int(rng.integers(1, 3))):  # windows on the wall above the table
        ww = _u(rng, 0.12, 0.22) * s
        wh = ww * _u(rng, 1.0, 1.5)
        wx = _u(rng, 0.02, 0.98) * (s - ww)
        wy = _u(rng, 0.05, 0.5) * max(table_top - wh, 1.0)
        items.append(Item("window", wx, wy, ww, wh, "window"))
    items.append(Item("table", table_x, table_top, table_w, s * 0.98 - table_top))
    n = int(rng.integers(2, 5))
    r = _u(rng, 0.035, 0.07) * s
    gap = table_w / n
    for k in range(n):  # a row of plates resting on the table top
        rk = r * _u(rng, 0.85, 1.15)
        cx = table_x + gap * (k + 0.5) + _u(rng, -0.15, 0.15) * gap
        items.append(_round_item(rng, "plate", cx, table_top - rk * 0.75, rk, cfg.cue_probability))
    if rng.random() < 0.3:  # a ball on the floor
        rb = _u(rng, 0.04, 0.08) * s
        bx, by = _u(rng, 0.05, 0.95) * s, s * _u(rng, 0.9, 0.97) - rb
        items.append(_round_item(rng, "ball", bx, by, rb, cfg.cue_probability))
    return horizon, items


LAYOUTS: dict[str, Callable] = {
    "street": _layout_street,
    "park": _layout_park,
    "dining": _layout_dining,
}


def _out_of_context(rng, s: float, cfg: ScenesConfig) -> list[Item]:
    cls = SCENE_CLASSES[int(rng.integers(len(SCENE_CLASSES)))]
    lo, hi = FREE_SIZE[cls]
    size = _u(rng, lo, hi) * s
    cx, cy = _u(rng, 0.1, 0.9) * s, _u(rng, 0.1, 0.9) * s
    if cls in ROUND_CLASSES:
        return [_round_item(rng, cls, cx, cy, size / 2, cfg.cue_probability)]
    h = size * {"cloud": 0.5, "bird": 0.65, "tree": 1.5, "house": 1.1, "window": 1.2}.get(cls, 0.48)
    extra = {"conifer": False, "roof": 0.35}
    return [Item(cls, cx - size / 2, cy - h / 2, size, h, cls, extra=extra)]


# ----------------------------------------------------------------------------- glyphs


class _SafeDraw(ImageDraw.ImageDraw):
    """ImageDraw that skips degenerate boxes (tiny glyphs at small image sizes)."""

    @staticmethod
    def _ok(xy) -> bool:
        # PIL passes boxes both flat, [x0, y0, x1, y1], and as corner pairs,
        # [(x0, y0), (x1, y1)] (ImageDraw.line(joint="curve") calls pieslice so).
        x0, y0, x1, y1 = np.asarray(xy, dtype=np.float64).reshape(4)
        return x1 >= x0 and y1 >= y0

    def rectangle(self, xy, *args, **kwargs) -> None:
        if self._ok(xy):
            super().rectangle(xy, *args, **kwargs)

    def rounded_rectangle(self, xy, *args, **kwargs) -> None:
        if self._ok(xy):
            super().rounded_rectangle(xy, *args, **kwargs)

    def ellipse(self, xy, *args, **kwargs) -> None:
        if self._ok(xy):
            super().ellipse(xy, *args, **kwargs)

    def pieslice(self, xy, *args, **kwargs) -> None:
        if self._ok(xy):
            super().pieslice(xy, *args, **kwargs)


def _mask(w: int, h: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    im = Image.new("L", (w, h), 0)
    return im, _SafeDraw(im)


def _layers_round(item: Item, w: int, h: int, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """Disc plus, when ``item.cue``, the class detail. Returns [(mask, rgb), ...]."""
    base = _colour(rng)
    detail = np.clip(base * _u(rng, 0.25, 0.55) + (_u(rng, 0, 0.2)), 0, 1)
    if rng.random() < 0.5:  # detail lighter than the base instead of darker
        detail = np.clip(1 - (1 - base) * _u(rng, 0.25, 0.55), 0, 1)
    pad = 1.45 if item.cls == "sun" and item.cue else 1.0
    dw, dh = w / pad, h / pad
    x0, y0 = (w - dw) / 2, (h - dh) / 2
    cx, cy, rx, ry = w / 2, h / 2, dw / 2, dh / 2
    disc, d = _mask(w, h)
    d.ellipse([x0, y0, x0 + dw - 1, y0 + dh - 1], fill=255)
    layers = [(np.asarray(disc), base)]
    if not item.cue:
        return layers
    det, dd = _mask(w, h)
    lw = max(1, round(min(rx, ry) * _u(rng, 0.08, 0.14)))
    if item.cls == "sun":  # rays around the disc
        n = int(rng.integers(8, 15))
        for k in range(n):
            a = 2 * math.pi * k / n
            p0 = (cx + 1.08 * rx * math.cos(a), cy + 1.08 * ry * math.sin(a))
            p1 = (cx + 1.42 * rx * math.cos(a), cy + 1.42 * ry * math.sin(a))
            dd.line([p0, p1], fill=255, width=lw + 1)
        layers.append((np.asarray(det), base))  # rays in the disc colour
        return layers
    if item.cls == "ball":  # alternating segments
        n = int(rng.integers(2, 5)) * 2
        off = _u(rng, 0, 360)
        for k in range(0, n, 2):
            dd.pieslice(
                [x0, y0, x0 + dw - 1, y0 + dh - 1],
                off + 360 * k / n,
                off + 360 * (k + 1) / n,
                fill=255,
            )
    elif item.cls == "plate":  # a thin rim ring, sometimes two
        for f in (_u(rng, 0.62, 0.8),) + ((_u(rng, 0.35, 0.5),) if rng.random() < 0.4 else ()):
            dd.ellipse([cx - rx * f, cy - ry * f, cx + rx * f, cy + ry * f], outline=255, width=lw)
    elif item.cls == "wheel":  # tyre, hub and spokes
        t = _u(rng, 0.18, 0.3)
        dd.ellipse([x0, y0, x0 + dw - 1, y0 + dh - 1], fill=255)
        dd.ellipse([cx - rx * (1 - t), cy - ry * (1 - t), cx + rx * (1 - t), cy + ry * (1 - t)], 0)
        hub = _u(rng, 0.18, 0.3)
        dd.ellipse([cx - rx * hub, cy - ry * hub, cx + rx * hub, cy + ry * hub], fill=255)
        n = int(rng.integers(3, 7))
        for k in range(n):
            a = 2 * math.pi * k / n
            dd.line([(cx, cy), (cx + rx * math.cos(a), cy + ry * math.sin(a))], fill=255, width=lw)
    layers.append((np.asarray(det), detail))
    return layers


def _layers_cloud(item: Item, w: int, h: int, rng) -> list:
    m, d = _mask(w, h)
    n = int(rng.integers(3, 6))
    for k in range(n):
        cx = w * (0.15 + 0.7 * k / max(n - 1, 1)) + _u(rng, -0.05, 0.05) * w
        rx = w * _u(rng, 0.14, 0.22)
        ry = h * _u(rng, 0.3, 0.48)
        cy = h - ry - _u(rng, 0, 0.1) * h
        d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    d.rectangle([w * 0.15, h * 0.55, w * 0.85, h - 1], fill=255)
    return [(np.asarray(m), _colour(rng))]


def _layers_bird(item: Item, w: int, h: int, rng) -> list:
    m, d = _mask(w, h)
    lw = max(1, round(h * _u(rng, 0.12, 0.2)))
    tip = h * _u(rng, 0.0, 0.25)
    mid = (w / 2, h * 0.75)
    d.line([(0, tip), (w * 0.25, h * 0.35), mid], fill=255, width=lw, joint="curve")
    d.line([mid, (w * 0.75, h * 0.35), (w - 1, tip)], fill=255, width=lw, joint="curve")
    d.ellipse([w * 0.4, h * 0.55, w * 0.6, h - 1], fill=255)
    return [(np.asarray(m), _colour(rng))]


def _layers_tree(item: Item, w: int, h: int, rng) -> list:
    trunk, dt = _mask(w, h)
    tw = max(2.0, w * _u(rng, 0.12, 0.2))
    dt.rectangle([w / 2 - tw / 2, h * 0.55, w / 2 + tw / 2, h - 1], fill=255)
    crown, dc = _mask(w, h)
    if item.extra.get("conifer"):
        for k in range(3):
            top = h * (0.0 + 0.18 * k)
            half = w * (0.3 + 0.1 * k)
            dc.polygon(
                [(w / 2, top), (w / 2 - half, top + h * 0.4), (w / 2 + half, top + h * 0.4)], 255
            )
    else:
        dc.ellipse([0, 0, w - 1, h * 0.72], fill=255)
    return [(np.asarray(trunk), _colour(rng)), (np.asarray(crown), _colour(rng))]


def _layers_house(item: Item, w: int, h: int, rng) -> list:
    roof_h = h * item.extra.get("roof", 0.35)
    body, db = _mask(w, h)
    db.rectangle([w * 0.05, roof_h, w * 0.95, h - 1], fill=255)
    roof, dr = _mask(w, h)
    dr.polygon([(0, roof_h + 1), (w / 2, 0), (w - 1, roof_h + 1)], fill=255)
    return [(np.asarray(body), _colour(rng)), (np.asarray(roof), _colour(rng))]


def _layers_window(item: Item, w: int, h: int, rng) -> list:
    frame, df = _mask(w, h)
    df.rectangle([0, 0, w - 1, h - 1], fill=255)
    glass, dg = _mask(w, h)
    f = max(1.0, min(w, h) * _u(rng, 0.08, 0.14))
    panes = [(0, 0.5), (0.5, 1.0)]
    for ax0, ax1 in panes:
        for ay0, ay1 in panes:
            dg.rectangle(
                [ax0 * w + f / (2 if ax0 else 1), ay0 * h + f / (2 if ay0 else 1),
                 ax1 * w - f / (2 if ax1 < 1 else 1) - 1, ay1 * h - f / (2 if ay1 < 1 else 1) - 1],
                fill=255,
            )  # fmt: skip
    return [(np.asarray(frame), _colour(rng)), (np.asarray(glass), _colour(rng))]


def _layers_car(item: Item, w: int, h: int, rng) -> list:
    body, db = _mask(w, h)
    split = h * _u(rng, 0.4, 0.5)
    db.rounded_rectangle([0, split, w - 1, h - 1], radius=max(1, (h - split) * 0.3), fill=255)
    inset = w * _u(rng, 0.15, 0.25)
    db.polygon(
        [(inset, split + 1), (inset + w * 0.12, 0), (w - inset - w * 0.1, 0),
         (w - inset * 0.6, split + 1)],
        fill=255,
    )  # fmt: skip
    glass, dg = _mask(w, h)
    g = max(1.0, h * 0.08)
    dg.polygon(
        [(inset + g * 1.5, split), (inset + w * 0.12 + g, g), (w - inset - w * 0.1 - g, g),
         (w - inset * 0.6 - g * 1.5, split)],
        fill=255,
    )  # fmt: skip
    return [(np.asarray(body), _colour(rng)), (np.asarray(glass), _colour(rng))]


def _layers_block(item: Item, w: int, h: int, rng) -> list:
    """Scenery: a road band, a door, a table (top and legs)."""
    m, d = _mask(w, h)
    if item.kind == "table":
        top = max(2.0, h * _u(rng, 0.08, 0.14))
        d.rectangle([0, 0, w - 1, top], fill=255)
        lw = max(2.0, w * 0.04)
        d.rectangle([w * 0.06, 0, w * 0.06 + lw, h - 1], fill=255)
        d.rectangle([w * 0.94 - lw, 0, w * 0.94, h - 1], fill=255)
    else:
        d.rectangle([0, 0, w - 1, h - 1], fill=255)
    return [(np.asarray(m), _colour(rng))]


def _layers_clutter(item: Item, w: int, h: int, rng) -> list:
    """Unlabelled distractors: random polygons, thick strokes, stars (never discs)."""
    m, d = _mask(w, h)
    kind = int(rng.integers(3))
    if kind == 0:
        n = int(rng.integers(3, 7))
        pts = [(_u(rng, 0, w - 1), _u(rng, 0, h - 1)) for _ in range(n)]
        d.polygon(pts, fill=255)
    elif kind == 1:
        pts = [(_u(rng, 0, w - 1), _u(rng, 0, h - 1)) for _ in range(int(rng.integers(2, 5)))]
        d.line(pts, fill=255, width=max(1, round(min(w, h) * _u(rng, 0.08, 0.2))))
    else:
        n = int(rng.integers(4, 8))
        pts = []
        for k in range(2 * n):
            a = math.pi * k / n
            f = 1.0 if k % 2 == 0 else _u(rng, 0.3, 0.5)
            pts.append(
                (w / 2 + f * (w / 2 - 1) * math.cos(a), h / 2 + f * (h / 2 - 1) * math.sin(a))
            )
        d.polygon(pts, fill=255)
    return [(np.asarray(m), _colour(rng))]


GLYPHS: dict[str, Callable] = {
    "round": _layers_round,
    "cloud": _layers_cloud,
    "bird": _layers_bird,
    "tree": _layers_tree,
    "house": _layers_house,
    "window": _layers_window,
    "car": _layers_car,
    "road": _layers_block,
    "door": _layers_block,
    "table": _layers_block,
    "clutter": _layers_clutter,
}


# ----------------------------------------------------------------------------- rendering


def _texture(rng, h: int, w: int, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """A random texture: (h, w) weights in [0, 1] and the (3,) colour they mix in."""
    kind = int(rng.integers(6))  # flat, stripes, checker, dots, speckle, gradient
    contrast = _u(rng, 0.15, 0.55) * strength
    if kind == 0 or contrast <= 0:
        return np.zeros((h, w), np.float32), np.zeros(3, np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)  # (h, w) each
    period = _u(rng, 3.0, 10.0)
    theta = _u(rng, 0, math.pi)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    v = -xx * math.sin(theta) + yy * math.cos(theta)
    if kind == 1:
        pat = (np.sin(2 * math.pi * u / period) > 0).astype(np.float32)
    elif kind == 2:
        pat = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    elif kind == 3:
        pat = (((u % period) - period / 2) ** 2 + ((v % period) - period / 2) ** 2) < (
            period / 3
        ) ** 2
        pat = pat.astype(np.float32)
    elif kind == 4:
        pat = rng.random((h, w), dtype=np.float32)
    else:
        pat = (u - u.min()) / max(float(np.ptp(u)), 1.0)
    return pat * contrast, _colour(rng)


def _rotate(rgb: np.ndarray, alpha: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate about the centre, growing the canvas so nothing is cut."""
    h, w = alpha.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = math.ceil(h * sin + w * cos), math.ceil(h * cos + w * sin)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    flags = cv2.INTER_LINEAR
    rgb = cv2.warpAffine(rgb, m, (nw, nh), flags=flags, borderValue=(0, 0, 0))
    alpha = cv2.warpAffine(alpha, m, (nw, nh), flags=flags, borderValue=0)
    return rgb, alpha


def _render_item(item: Item, rng, nuisance: float) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Draw ``item`` into a local premultiplied canvas; return (rgb, alpha, x0, y0)."""
    w, h = max(2, round(item.w)), max(2, round(item.h))
    layers = GLYPHS[item.kind](item, w, h, rng)
    rgb = np.zeros((h, w, 3), np.float32)  # (h, w, 3) premultiplied colour
    alpha = np.zeros((h, w), np.float32)  # (h, w) coverage
    for mask, colour in layers:
        a = mask.astype(np.float32) / 255
        rgb = rgb * (1 - a[..., None]) + a[..., None] * colour
        alpha = np.maximum(alpha, a)
    if item.kind not in ("road", "door", "table"):
        pat, tcol = _texture(rng, h, w, nuisance)
        rgb = rgb * (1 - pat[..., None]) + pat[..., None] * tcol * alpha[..., None]
        if rng.random() < 0.4:  # a darker outline
            edge = alpha - cv2.erode(alpha, np.ones((3, 3), np.uint8))
            rgb = rgb * (1 - edge[..., None] * _u(rng, 0.3, 0.8))
    angle = item.angle
    if item.kind != "round" and item.cls is not None:
        angle += _u(rng, -8, 8) * nuisance
    if abs(angle) > 0.5:
        rgb, alpha = _rotate(rgb, alpha, angle)
    x0 = round(item.x + item.w / 2 - alpha.shape[1] / 2)
    y0 = round(item.y + item.h / 2 - alpha.shape[0] / 2)
    sigma = _u(rng, 0.0, 1.3) * nuisance if rng.random() < 0.5 else 0.0
    if sigma > 0.3:
        pad = math.ceil(3 * sigma)
        rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        alpha = cv2.copyMakeBorder(alpha, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        rgb = cv2.GaussianBlur(rgb, (0, 0), sigma)
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)
        x0, y0 = x0 - pad, y0 - pad
    return rgb, alpha, x0, y0


def _background(rng, s: int, horizon: float, nuisance: float) -> np.ndarray:
    """Two regions (sky/wall above, ground/floor below), each any colour and texture."""
    img = np.empty((s, s, 3), np.float32)  # (S, S, 3)
    hz = int(np.clip(round(horizon), 1, s - 1))
    for y0, y1 in ((0, hz), (hz, s)):
        base = _colour(rng)
        ramp = np.linspace(0, 1, y1 - y0, dtype=np.float32)[:, None, None]  # (h, 1, 1)
        tint = _colour(rng)
        g = _u(rng, 0.0, 0.5)
        region = base * (1 - g * ramp) + tint * g * ramp  # (h, 1, 3)
        pat, tcol = _texture(rng, y1 - y0, s, 0.5 * nuisance)
        img[y0:y1] = region * (1 - pat[..., None]) + pat[..., None] * tcol
    return img


@dataclass
class SceneObject:
    name: str
    box: tuple[int, int, int, int]  # VOC 1-based inclusive (xmin, ymin, xmax, ymax)
    difficult: bool
    truncated: bool


def render_scene(cfg: ScenesConfig, index: int) -> tuple[np.ndarray, list[SceneObject], str, int]:
    """Draw image ``index``: (uint8 (S, S, 3) RGB, objects, scene type, JPEG quality)."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, index]))
    s = cfg.image_size
    scene = SCENE_TYPES[int(rng.choice(len(SCENE_TYPES), p=SCENE_WEIGHTS))]
    horizon, items = LAYOUTS[scene](rng, float(s), cfg)
    if rng.random() < cfg.out_of_context:
        items += _out_of_context(rng, float(s), cfg)
    # clutter anywhere, and occluders over some labelled objects; drawn last, on top
    clutter = []
    for _ in range(int(rng.poisson(cfg.clutter))):
        size = _u(rng, 0.04, 0.14) * s
        clutter.append(
            Item("clutter", _u(rng, -0.05, 1.0) * s, _u(rng, -0.05, 1.0) * s, size, size)
        )
    for it in items:
        if it.cls is not None and rng.random() < cfg.occluder_probability:
            size = max(it.w, it.h) * _u(rng, 0.3, 0.6)
            cx, cy = it.x + _u(rng, 0, it.w), it.y + _u(rng, 0, it.h)
            clutter.append(Item("clutter", cx - size / 2, cy - size / 2, size, size))
    img = _background(rng, s, horizon, cfg.nuisance)
    owner = np.full((s, s), -1, np.int32)  # (S, S) index of the item on top
    amodal_out: dict[int, bool] = {}  # labelled item -> extends beyond the image
    solid_area: dict[int, int] = {}  # labelled item -> drawn pixels inside the image
    region: dict[int, tuple[int, int, int, int]] = {}  # item -> (ix0, iy0, ix1, iy1) drawn
    for k, it in enumerate(items + clutter):
        rgb, alpha, x0, y0 = _render_item(it, rng, cfg.nuisance)
        h, w = alpha.shape
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + w, s), min(y0 + h, s)
        solid = alpha > 0.5
        if it.cls is not None:
            ys, xs = np.nonzero(solid)
            amodal_out[k] = bool(
                len(xs)
                and (
                    xs.min() + x0 < 0
                    or ys.min() + y0 < 0
                    or xs.max() + x0 >= s
                    or ys.max() + y0 >= s
                )
            )
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        sl = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
        a = alpha[sl][..., None]  # (h', w', 1)
        img[iy0:iy1, ix0:ix1] = img[iy0:iy1, ix0:ix1] * (1 - a) + rgb[sl]
        owner[iy0:iy1, ix0:ix1][solid[sl]] = k
        solid_area[k] = int(np.count_nonzero(solid[sl]))
        region[k] = (ix0, iy0, ix1, iy1)
    # per-image lighting and sensor noise
    gain = _u(rng, 0.75, 1.15)
    cast = 1 + rng.uniform(-0.08, 0.08, 3).astype(np.float32) * cfg.nuisance
    img = img * gain * cast + _u(rng, -0.05, 0.05)
    img += rng.standard_normal(img.shape, dtype=np.float32) * (_u(rng, 0.0, 0.035) * cfg.nuisance)
    image = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)

    objects = []
    for k, it in enumerate(items):
        if it.cls is None or it.cls not in cfg.classes:
            continue
        if k not in region:
            continue
        rx0, ry0, rx1, ry1 = region[k]
        ys, xs = np.nonzero(owner[ry0:ry1, rx0:rx1] == k)  # only where item k was drawn
        if len(xs) < MIN_VISIBLE_PIXELS:
            continue
        x1, y1 = rx0 + int(xs.min()), ry0 + int(ys.min())
        x2, y2 = rx0 + int(xs.max()) + 1, ry0 + int(ys.max()) + 1
        visible = len(xs) / max(1, solid_area.get(k, 0))
        small = min(x2 - x1, y2 - y1) < cfg.difficult_max_size
        objects.append(
            SceneObject(
                name=it.cls,
                box=(x1 + 1, y1 + 1, x2, y2),
                difficult=bool(small or visible < cfg.difficult_min_visible),
                truncated=amodal_out.get(k, False),
            )
        )
    q = int(rng.integers(cfg.jpeg_quality_min, cfg.jpeg_quality + 1))
    return image, objects, scene, q


# ----------------------------------------------------------------------------- VOC files


def annotation_xml(
    image_id: str, folder: str, size: int, objects: list[SceneObject], scene: str
) -> str:
    """A PASCAL VOC annotation (deterministic text, 1-based inclusive integer corners)."""
    objs = "".join(
        "\t<object>\n"
        f"\t\t<name>{o.name}</name>\n"
        "\t\t<pose>Unspecified</pose>\n"
        f"\t\t<truncated>{int(o.truncated)}</truncated>\n"
        f"\t\t<difficult>{int(o.difficult)}</difficult>\n"
        "\t\t<bndbox>\n"
        f"\t\t\t<xmin>{o.box[0]}</xmin>\n\t\t\t<ymin>{o.box[1]}</ymin>\n"
        f"\t\t\t<xmax>{o.box[2]}</xmax>\n\t\t\t<ymax>{o.box[3]}</ymax>\n"
        "\t\t</bndbox>\n"
        "\t</object>\n"
        for o in objects
    )
    return (
        "<annotation>\n"
        f"\t<folder>{folder}</folder>\n"
        f"\t<filename>{image_id}.jpg</filename>\n"
        "\t<source>\n\t\t<database>SCN generated scenes</database>\n"
        f"\t\t<annotation>{scene}</annotation>\n\t</source>\n"
        f"\t<size>\n\t\t<width>{size}</width>\n\t\t<height>{size}</height>\n"
        "\t\t<depth>3</depth>\n\t</size>\n"
        "\t<segmented>0</segmented>\n"
        f"{objs}"
        "</annotation>\n"
    )


def split_ids(cfg: ScenesConfig) -> dict[str, list[str]]:
    """Image ids of each split: train first, then val, then test; trainval = train + val."""
    ids = [f"{k:06d}" for k in range(cfg.n_train + cfg.n_val + cfg.n_test)]
    train, val = ids[: cfg.n_train], ids[cfg.n_train : cfg.n_train + cfg.n_val]
    return {"train": train, "val": val, "trainval": train + val, "test": ids[-cfg.n_test :]}


def _write_imagesets(main: Path, splits: dict[str, list[str]], labels: dict, classes) -> None:
    """``{split}.txt`` and VOC's ``{class}_{split}.txt`` (1 present, -1 absent, 0 difficult)."""
    for split, ids in splits.items():
        (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for c in classes:
            (main / f"{c}_{split}.txt").write_text(
                "".join(f"{i} {labels[i].get(c, -1):2d}\n" for i in ids)
            )


def _write_dataset(year: Path, cfg: ScenesConfig, show_progress: bool) -> dict:
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (year / sub).mkdir(parents=True, exist_ok=True)
    splits = split_ids(cfg)
    labels: dict[str, dict[str, int]] = {}
    per_class: Counter = Counter()
    difficult: Counter = Counter()
    scenes: Counter = Counter()
    n_truncated = 0
    all_ids = splits["train"] + splits["val"] + splits["test"]
    for k, image_id in enumerate(tqdm(all_ids, desc="scenes", disable=not show_progress)):
        image, objects, scene, quality = render_scene(cfg, k)
        Image.fromarray(image).save(year / "JPEGImages" / f"{image_id}.jpg", quality=quality)
        (year / "Annotations" / f"{image_id}.xml").write_text(
            annotation_xml(image_id, cfg.name, cfg.image_size, objects, scene)
        )
        lab: dict[str, int] = {}
        for o in objects:
            per_class[o.name] += 1
            difficult[o.name] += int(o.difficult)
            n_truncated += int(o.truncated)
            lab[o.name] = 1 if not o.difficult else max(lab.get(o.name, 0), 0)
        labels[image_id] = lab
        scenes[scene] += 1
    _write_imagesets(year / "ImageSets" / "Main", splits, labels, cfg.classes)
    return {
        "images": {split: len(ids) for split, ids in splits.items()},
        "objects_per_class": {c: per_class[c] for c in cfg.classes},
        "difficult_per_class": {c: difficult[c] for c in cfg.classes},
        "objects": sum(per_class.values()),
        "difficult": sum(difficult.values()),
        "truncated": n_truncated,
        "scene_types": {t: scenes[t] for t in SCENE_TYPES},
    }


def generate_scenes(root: Path, cfg: ScenesConfig, show_progress: bool = False) -> dict:
    """Write ``root/VOCdevkit/<cfg.name>/`` atomically; return its metrics.

    The folder is built under a temporary name and renamed when complete, replacing
    an earlier one. Tiny configurations are fast (12 images of 128 px: well under a
    second), so tests can make their own datasets.
    """
    start = time.perf_counter()
    year = Path(root) / "VOCdevkit" / cfg.name
    with atomic_path(year) as tmp:
        metrics = _write_dataset(tmp, cfg, show_progress)
    metrics["path"] = str(year)
    metrics["generate_seconds"] = round(time.perf_counter() - start, 3)
    log.info(
        "scenes: %d images, %d objects (%d difficult) in %s, %.1fs",
        sum(len(v) for k, v in split_ids(cfg).items() if k != "trainval"),
        metrics["objects"],
        metrics["difficult"],
        year,
        metrics["generate_seconds"],
    )
    return metrics


def stage(params) -> dict:
    """DVC stage ``scenes``: generate the dataset under ``data.scenes_root``."""
    metrics = generate_scenes(params.data.scenes_root, params.scenes, show_progress=True)
    return {"code_version": code_version(), **metrics}
