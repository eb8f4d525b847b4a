"""The context rules: where each class lives in each scene type.

Owns the scene types and their weights, one layout function per type (``LAYOUTS``:
sky objects, houses with windows, cars on their wheels, trees, balls on the grass,
plates in a row on a table) and the out-of-context object (``_out_of_context``, sized
by ``FREE_SIZE``). A layout returns the horizon and the items, in drawing order.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.data.config import SCENE_CLASSES, ScenesConfig
from pipeline.data.scenes.items import ROUND_CLASSES, Item, _round_item, _u

SCENE_TYPES = ("street", "park", "dining")
SCENE_WEIGHTS = (0.35, 0.35, 0.30)

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


def _sky_objects(rng, s: float, horizon: float, cfg: ScenesConfig, p_sun: float) -> list[Item]:
    """Sun high in the sky with clouds beside it; clouds in a row; a flock of birds."""
    items: list[Item] = []
    clouds_y = _u(rng, 0.06, 0.3) * horizon
    if rng.random() < p_sun:
        r = _u(rng, 0.045, 0.085) * s
        cx, cy = _u(rng, 0.1, 0.9) * s, _u(rng, 0.1, 0.32) * horizon + r
        items.append(_round_item(rng, "sun", cx, cy, r, cfg))
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


def _car(rng, s: float, x: float, ground: float, cfg: ScenesConfig) -> list[Item]:
    """A car on the road with its two wheels on the bottom edge of the body."""
    w = _u(rng, 0.22, 0.36) * s
    h = w * _u(rng, 0.4, 0.55)
    r = w * _u(rng, 0.1, 0.15)
    body_bottom = ground - r * 0.9
    items = [Item("car", x, body_bottom - h, w, h, "car", angle=_u(rng, -4, 4))]
    for fx in (_u(rng, 0.17, 0.25), _u(rng, 0.75, 0.83)):
        items.append(_round_item(rng, "wheel", x + fx * w, body_bottom, r, cfg))
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
        items += _car(rng, s, x, ground, cfg)
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
        items.append(_round_item(rng, "ball", cx, cy, r, cfg))
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
        items.append(_round_item(rng, "plate", cx, table_top - rk * 0.75, rk, cfg))
    if rng.random() < 0.3:  # a ball on the floor
        rb = _u(rng, 0.04, 0.08) * s
        bx, by = _u(rng, 0.05, 0.95) * s, s * _u(rng, 0.9, 0.97) - rb
        items.append(_round_item(rng, "ball", bx, by, rb, cfg))
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
        return [_round_item(rng, cls, cx, cy, size / 2, cfg)]
    h = size * {"cloud": 0.5, "bird": 0.65, "tree": 1.5, "house": 1.1, "window": 1.2}.get(cls, 0.48)
    extra = {"conifer": False, "roof": 0.35}
    return [Item(cls, cx - size / 2, cy - h / 2, size, h, cls, extra=extra)]
