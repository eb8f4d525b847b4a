"""The glyphs: how each kind of item is drawn into masks and colours.

Owns ``_SafeDraw`` (PIL drawing that skips degenerate boxes), one ``_layers_*``
function per kind and the ``GLYPHS`` table from ``Item.kind`` to that function. A
glyph returns ``[(mask, rgb), ...]`` layers in the item's local (w, h) canvas; the
class cues (sun rays, ball segments, plate rim, wheel tyre) are drawn here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image, ImageDraw

from pipeline.data.scenes.items import Item, _colour, _u


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


def _faint(mask: Image.Image, item: Item) -> np.ndarray:
    """The detail mask at the item's cue opacity (version 2 scenes; 1 = opaque)."""
    alpha = item.extra.get("cue_alpha", 1.0)
    m = np.asarray(mask)
    return m if alpha >= 1.0 else np.round(m.astype(np.float32) * alpha).astype(np.uint8)


# the class of a relation-style disc: (centre lighter than the rim, centre more saturated)
RELATIONS = {
    "sun": (True, True),
    "wheel": (True, False),
    "plate": (False, False),
    "ball": (False, True),
}


# cue_style parity: (centre lighter, centre more saturated, centre large) per class; each
# disc shows this combination or, with probability 1/2, its opposite (all three flipped).
# A class's two corners of the cube are antipodal: their midpoint is the cube's centre,
# which is also the midpoint of every other class's pair, so no hyperplane of the three
# attributes parts one class from the rest (a linear read-out of features that encode the
# attributes linearly cannot, a non-linear one can)
PARITY = {
    "sun": (True, True, True),
    "wheel": (True, False, False),
    "plate": (False, True, False),
    "ball": (False, False, True),
}
# the centre's share of the radius: small or large (parity), any (relation)
CENTRE_SMALL, CENTRE_LARGE, CENTRE_ANY = (0.44, 0.56), (0.64, 0.76), (0.5, 0.72)


def parity_attributes(cls: str, flip: bool) -> tuple[bool, bool, bool]:
    """(lighter, richer, large) of a parity-style disc of ``cls``, flipped or not."""
    return tuple(a != flip for a in PARITY[cls])  # type: ignore[return-value]


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    px = np.array([[[h, s * 255, v * 255]]], dtype=np.float32).round().astype(np.uint8)
    return cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255


def _layers_relation(item: Item, w: int, h: int, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """A two-tone disc, centre and rim, each of any hue; the class is only which of the
    two is lighter and which more saturated (``RELATIONS``), by 0.35 ``cue_alpha`` each
    way around a random middle. Pooled features see two colours and a circular edge with
    either polarity; only a read-out that knows where the centre is sees the relation.
    With ``extra["parity"]`` (cue_style parity) the centre's size is a third attribute and
    the three come from ``PARITY``, all flipped for half the discs."""
    centre_share = CENTRE_ANY
    if item.extra.get("parity"):
        flip = bool(rng.random() < 0.5)
        lighter, richer, large = parity_attributes(item.cls, flip)
        centre_share = CENTRE_LARGE if large else CENTRE_SMALL
    else:
        lighter, richer = RELATIONS[item.cls]
    d = item.extra["cue_alpha"] * 0.35  # each way: the two differ by up to 0.7
    v, s = _u(rng, 0.1 + d, 0.95 - d), _u(rng, 0.1 + d, 0.95 - d)
    sign_v, sign_s = (1 if lighter else -1), (1 if richer else -1)
    centre = _hsv(_u(rng, 0, 180), s + sign_s * d, v + sign_v * d)
    rim = _hsv(_u(rng, 0, 180), s - sign_s * d, v - sign_v * d)
    f = _u(rng, *centre_share)  # the centre's share of the radius
    cx, cy, rx, ry = w / 2, h / 2, w / 2, h / 2
    disc, dd = _mask(w, h)
    dd.ellipse([0, 0, w - 1, h - 1], fill=255)
    inner, di = _mask(w, h)
    di.ellipse([cx - rx * f, cy - ry * f, cx + rx * f, cy + ry * f], fill=255)
    return [(np.asarray(disc), rim), (np.asarray(inner), centre)]


def _layers_round(item: Item, w: int, h: int, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """Disc plus, when ``item.cue``, the class detail. Returns [(mask, rgb), ...]."""
    if item.extra.get("relation"):
        return _layers_relation(item, w, h, rng)
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
    if item.cls == "sun" and "cue_alpha" in item.extra:  # version 2: a glow inside the disc
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)  # (h, w) each
        d2 = ((xx + 0.5 - cx) / max(rx, 1.0)) ** 2 + ((yy + 0.5 - cy) / max(ry, 1.0)) ** 2
        core = _u(rng, 0.6, 0.9)  # the glow fades to nothing at this share of the radius
        glow = np.clip(1.0 - np.sqrt(d2) / core, 0.0, 1.0) * np.asarray(disc) / 255
        light = np.clip(1 - (1 - base) * _u(rng, 0.1, 0.4), 0, 1)  # always lighter
        alpha = item.extra["cue_alpha"]
        layers.append((np.round(glow * 255 * alpha).astype(np.uint8), light))
        return layers
    if item.cls == "plate" and "cue_alpha" in item.extra:  # version 2: well and rim
        f = _u(rng, 0.55, 0.72)
        dd.ellipse([cx - rx * f, cy - ry * f, cx + rx * f, cy + ry * f], fill=255)
        dd.ellipse([x0, y0, x0 + dw - 1, y0 + dh - 1], outline=255, width=lw)
        layers.append((_faint(det, item), detail))
        return layers
    if item.cls == "sun":  # rays around the disc
        n = int(rng.integers(8, 15))
        for k in range(n):
            a = 2 * math.pi * k / n
            p0 = (cx + 1.08 * rx * math.cos(a), cy + 1.08 * ry * math.sin(a))
            p1 = (cx + 1.42 * rx * math.cos(a), cy + 1.42 * ry * math.sin(a))
            dd.line([p0, p1], fill=255, width=lw + 1)
        layers.append((_faint(det, item), base))  # rays in the disc colour
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
    layers.append((_faint(det, item), detail))
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
