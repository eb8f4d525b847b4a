"""Doersch et al.'s pairs of patches (ICCV 2015, section 3): a 3x3 grid of patches, the
centre one paired with each of its 8 neighbours, and the precautions against trivial
shortcuts.

Sampling one grid in an image of ``W x H`` pixels (:func:`sample_grids`):

1. the image is (virtually) resized by a factor ``s`` to a pixel count drawn uniformly in
   ``image_pixels`` (paper: 150K-450K), aspect ratio kept; when the grid does not fit the
   resized image, ``s`` grows until it does (the patches shrink in image pixels);
2. the 3x3 grid of ``patch``-pixel cells with ``gap`` pixels between cells is placed
   uniformly at random so that every cell, moved by any jitter, lies inside the image:
   the label is then independent of where the centre patch is (near the left edge the
   neighbour is not more likely to be on the right);
3. each of the 9 patches moves by its own uniform jitter of at most ``jitter`` pixels in
   x and y;
4. the boxes are mapped back to the original image (divided by ``s``).

A grid gives 8 pairs (:func:`pair_table`): the centre patch first, one neighbour second,
labelled with the neighbour's position, in row-major order (:data:`NEIGHBOURS`)::

    0 1 2
    3 . 4
    5 6 7

The paper samples one neighbour per centre; taking all 8 (as the authors' code pairs every
neighbouring patch of its grids) costs 9 patches for 8 pairs instead of 16, which is what
the trunk cache pays for, and balances the labels exactly.

The gap and the jitter keep low-level cues (lines and textures continuing across the
patch boundary, exact alignment) from giving the answer away. Against chromatic
aberration (the lens shifts colour channels towards the image borders, which reveals
where a patch lies) each patch is either colour-dropped (:func:`drop_colors`: one random
channel kept, the other two replaced by faint noise) or colour-projected
(:func:`project_colors`: the green-magenta axis removed).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

#: (row, column) offset of the second patch from the centre, indexed by the label
NEIGHBOURS = np.array(
    [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)], dtype=np.int64
)  # (8, 2)
N_POSITIONS = len(NEIGHBOURS)
CENTRE = 4  # the centre's cell in the row-major 3x3 grid
#: the grid cell of the neighbour of each label
NEIGHBOUR_CELLS = (NEIGHBOURS[:, 0] + 1) * 3 + (NEIGHBOURS[:, 1] + 1)  # (8,)
#: the green-magenta colour axis (paper section 3.2, "projection")
GREEN_MAGENTA = np.array([-1.0, 2.0, -1.0])
#: std of the noise replacing a dropped channel, relative to the kept channel's (paper)
DROP_NOISE = 0.01
COLORS = ("drop", "project", "none")


@dataclass(frozen=True)
class Geometry:
    """The grid in pixels of the resized image (``doersch.patch``, ``gap``, ``jitter``,
    ``image_pixels``)."""

    patch: float
    gap: float
    jitter: float
    image_pixels: tuple[float, float]

    @property
    def span(self) -> float:
        """Side of the unjittered 3x3 grid."""
        return 3 * self.patch + 2 * self.gap

    @property
    def footprint(self) -> float:
        """Side of the region any jittered cell of the grid can reach."""
        return self.span + 2 * self.jitter


def image_seed(seed: int, image_id: str) -> np.random.Generator:
    """The generator of one image's grids: fixed by the seed and the image id alone."""
    return np.random.default_rng([seed, zlib.crc32(image_id.encode())])


def sample_grids(
    width: float, height: float, n: int, geom: Geometry, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` jittered 3x3 grids of one ``width x height`` image: boxes (n, 9, 4) float64
    ``x1, y1, x2, y2`` in image pixels, cells in row-major order (cell 4 the centre), and
    scales (n,) (resized pixels per image pixel)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size: {width}x{height}; allowed: positive width and height")
    lo, hi = geom.image_pixels
    s = np.sqrt(rng.uniform(lo, hi, n) / (width * height))  # (n,)
    s = np.maximum(s, geom.footprint / min(width, height))  # (n,) the grid fits
    free_x = np.maximum(width * s - geom.footprint, 0.0)  # (n,) room to place the grid
    free_y = np.maximum(height * s - geom.footprint, 0.0)
    step = geom.patch + geom.gap  # from one cell's corner to the next
    # top-left corner of the unjittered grid, cell (0, 0)
    x0 = geom.jitter + rng.uniform(0.0, 1.0, n) * free_x  # (n,)
    y0 = geom.jitter + rng.uniform(0.0, 1.0, n) * free_y
    row, col = np.divmod(np.arange(9), 3)  # (9,), (9,)
    jit = rng.uniform(-geom.jitter, geom.jitter, (n, 9, 2))  # (n, 9, (dx, dy))
    left = x0[:, None] + col * step + jit[..., 0]  # (n, 9)
    top = y0[:, None] + row * step + jit[..., 1]  # (n, 9)
    boxes = np.stack([left, top, left + geom.patch, top + geom.patch], axis=-1)  # (n, 9, 4)
    boxes /= s[:, None, None]  # back to image pixels
    # rounding only: the construction keeps every box inside [0, W] x [0, H]
    boxes[..., 0::2] = boxes[..., 0::2].clip(0.0, width)
    boxes[..., 1::2] = boxes[..., 1::2].clip(0.0, height)
    return boxes, s


@dataclass(frozen=True)
class PairTable:
    """The fixed, seeded pairs of a split, over a table of patches.

    Patches: ``patch_image`` (P,) into ``image_ids``, ``patch_box`` (P, 4) float32,
    ``patch_keep`` (P,) int64 (the colour channel a patch keeps with ``color: drop``, else
    -1). Pairs: ``first`` (n,) the centre patches, ``second`` (n,) their neighbours,
    ``labels`` (n,) int64 in 0..7.
    """

    image_ids: tuple[str, ...]
    patch_image: np.ndarray
    patch_box: np.ndarray
    patch_keep: np.ndarray
    first: np.ndarray
    second: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_patches(self) -> int:
        return len(self.patch_box)


def pair_table(
    images: Sequence[tuple[str, int, int]],
    grids_per_image: int,
    geom: Geometry,
    color: str,
    seed: int,
) -> PairTable:
    """``grids_per_image`` grids of each ``(image id, width, height)``, 8 pairs each; the
    grids of an image depend only on ``seed`` and its id (not on the other images)."""
    if color not in COLORS:
        raise ValueError(f"color: {color!r} is not a valid choice; allowed: {', '.join(COLORS)}")
    g = grids_per_image
    boxes = np.zeros((len(images) * g * 9, 4))
    keep = np.full(len(images) * g * 9, -1, np.int64)
    for k, (image_id, w, h) in enumerate(images):
        rng = image_seed(seed, image_id)
        b, _ = sample_grids(w, h, g, geom, rng)  # (g, 9, 4)
        rows = slice(k * g * 9, (k + 1) * g * 9)
        boxes[rows] = b.reshape(-1, 4)
        kept = rng.integers(0, 3, g * 9)  # drawn for every colour mode: the same grids
        if color == "drop":
            keep[rows] = kept
    grid_start = np.arange(len(images) * g) * 9  # (G,) first patch of each grid
    first = np.repeat(grid_start + CENTRE, N_POSITIONS)  # (8G,)
    second = (grid_start[:, None] + NEIGHBOUR_CELLS[None, :]).reshape(-1)  # (8G,)
    labels = np.tile(np.arange(N_POSITIONS), len(grid_start))  # (8G,)
    return PairTable(
        tuple(i for i, _, _ in images),
        np.repeat(np.arange(len(images)), g * 9),
        boxes.astype(np.float32),
        keep,
        first,
        second,
        labels,
    )


# ----------------------------------------------------------------------------- colour


def project_colors(x: torch.Tensor) -> torch.Tensor:
    """(K, 3, S, S) RGB -> the same with the green-magenta component of every pixel removed:
    ``A x`` with ``A = I - B^T B / (B B^T)``, ``B = [-1, 2, -1]`` (greys are unchanged)."""
    b = torch.as_tensor(GREEN_MAGENTA, dtype=x.dtype, device=x.device)  # (3,)
    a = torch.eye(3, dtype=x.dtype, device=x.device) - torch.outer(b, b) / b.dot(b)  # (3, 3)
    return torch.einsum("ij,kjhw->kihw", a, x)  # (K, 3, S, S)


def drop_colors(
    x: torch.Tensor, keep: torch.Tensor, fill: Sequence[float], generator: torch.Generator
) -> torch.Tensor:
    """(K, 3, S, S) RGB -> channel ``keep[k]`` of patch k kept, the other two replaced by
    ``fill`` (the normalisation mean: zero after normalising) plus Gaussian noise of 1/100
    the kept channel's standard deviation (paper section 3.2)."""
    k = len(x)
    rows = torch.arange(k, device=x.device)
    kept = x[rows, keep]  # (K, S, S)
    std = kept.flatten(1).std(1).clamp(min=1e-6) * DROP_NOISE  # (K,)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype) * std.view(k, 1, 1, 1)
    out = torch.as_tensor(fill, dtype=x.dtype).view(1, 3, 1, 1) + noise  # (K, 3, S, S)
    out[rows, keep] = kept
    return out


def apply_color(
    x: torch.Tensor, color: str, keep: torch.Tensor, fill: Sequence[float], generator
) -> torch.Tensor:
    """The precaution ``color`` (``drop``, ``project``, ``none``) on crops (K, 3, S, S)."""
    if color == "drop":
        return drop_colors(x, keep, fill, generator)
    if color == "project":
        return project_colors(x)
    if color == "none":
        return x
    raise ValueError(f"color: {color!r} is not a valid choice; allowed: {', '.join(COLORS)}")
