"""Rendering one scene: nuisance, compositing and the boxes of what stays visible.

Owns texture, rotation and blur of an item (``_render_item``), the two-region
background, clutter and occluders, per-image lighting and noise, and
:func:`render_scene`, which draws image ``index`` from its own random stream and
annotates each labelled object by its visible pixels (:class:`SceneObject`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.data.config import ScenesConfig
from pipeline.data.scenes.glyphs import GLYPHS
from pipeline.data.scenes.items import Item, _colour, _u
from pipeline.data.scenes.layouts import LAYOUTS, SCENE_TYPES, SCENE_WEIGHTS, _out_of_context

MIN_VISIBLE_PIXELS = 6  # an object with fewer unoccluded pixels is not annotated


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
        if min(x2 - x1, y2 - y1) < 2:
            # a one-pixel-wide sliver (an object clipped away at the border) would write
            # xmin == xmax, which VOC readers reject as a zero-area box: left out of the
            # annotation, every version (the pixels and the random stream are unchanged,
            # so no image changes; no image of the default 450 has one)
            continue
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
