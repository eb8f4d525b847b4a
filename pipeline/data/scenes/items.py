"""What a scene is made of: the :class:`Item` to draw and the helpers every rule shares.

Owns the item record, the uniform draw ``_u``, the class-free colour ``_colour`` and the
disc look-alikes (``ROUND_CLASSES``, ``_round_item``): sun, ball, plate and wheel are
the same disc, told apart only by an optional cue and their context.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from pipeline.data.config import ScenesConfig

ROUND_CLASSES = ("sun", "ball", "plate", "wheel")


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


def _round_item(rng, cls: str, cx: float, cy: float, r: float, cfg: ScenesConfig) -> Item:
    """A disc of class ``cls`` centred at (cx, cy), aspect jittered the same for all.

    Version 2 also draws the opacity of the class detail, ``extra["cue_alpha"]``, from
    ``[cue_contrast_min, cue_contrast_max]`` (version 1: always opaque)."""
    aspect = _u(rng, 0.82, 1.0)
    w, h = 2 * r, 2 * r * aspect
    if rng.random() < 0.5:
        w, h = h, w
    cue = bool(rng.random() < cfg.cue_probability)
    extra = {}
    if cfg.version >= 2:
        extra["cue_alpha"] = _u(rng, cfg.cue_contrast_min, cfg.cue_contrast_max)
        if cfg.cue_style in ("relation", "parity"):
            extra["relation"] = True
        if cfg.cue_style == "parity":
            extra["parity"] = True
    # version 1's sun rays reach beyond the disc; version 2's cues all lie inside it
    pad = 1.45 if cls == "sun" and cue and cfg.version == 1 else 1.0
    return Item(
        "round",
        cx - w * pad / 2,
        cy - h * pad / 2,
        w * pad,
        h * pad,
        cls=cls,
        angle=_u(rng, 0, 360),
        cue=cue,
        extra=extra,
    )
