"""Configuration of the paper's synthetic experiment (section 4.1, Figures 3 and 4).

Geometry (all in pixels of a square ``canvas_size`` canvas, object boxes of side
``min_size..max_size``, centres compared):

* (circle, square): the square is right of the circle (left or right with
  ``two_sided``), no overlap, and the vertical difference of the centres is at most
  ``axis_tolerance``.
* (circle, triangle): the triangle is above the circle (above or below with
  ``two_sided``), no overlap, and the horizontal difference of the centres is at most
  ``axis_tolerance``. (The paper: "the triangle (which is above circle)".)
* (circle, black): an empty (black) patch anywhere else; with ``black_off_axis`` (the
  default) both centre differences exceed ``axis_tolerance``, so that an offset names
  exactly one pair type (the paper only says "randomly sampled"; without this rule a
  quarter of the black offsets would fall inside the square or triangle zones and the
  best possible test error would not reach zero).

``two_sided`` makes the offset-to-shape map symmetric in sign (|dx| vs |dy| decides), a
function that is not linear in the offset, so the average first gradient towards using
the offset is zero; with image-scaled offsets (the one setting tried) the offset model
then stayed at the no-offset plateau.

Patches are cropped around the object box grown by ``crop_margin`` of its side on each
side (a tight crop that still shows a square as a square), and resized to
``input_size``. Offsets are the 8 corner differences b_top - b_bottom of the crop boxes,
in pixels (``offset_scale: none``, the default here) or divided by the canvas size
(``image``, the main pipeline's ``pairs.offset_scale``).

Why pixels by default: in h2 = sigmoid(V1 h1 + Vloc o) the fc features h1 have a norm
of about 50 while image-scaled offsets have a norm below 1, so a step on Vloc moves
h2 thousands of times less (SGD) or ~100x less (Adam) than a step on V1. With image
scaling the offset model learned far slower in our runs (BENCHMARKS.md, synthetic).
Pixel offsets (norm ~100-300) are of the same order as h1, and Adam balances the rest;
the paper does not say how it scaled offsets. SGD, the paper's optimiser, diverged or
stalled at the plateau on this data at every learning rate we tried.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pipeline.config import ConfigError, param


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = param(0, ge=0, help="seeds the generator, the split and the training runs")
    # --- data
    n_square: int = param(300, ge=1, help="(circle, square) pairs, horizontal offsets")
    n_triangle: int = param(300, ge=1, help="(circle, triangle) pairs, vertical offsets")
    n_black: int = param(200, ge=1, help="(circle, black patch) pairs, random offsets")
    n_test: int = param(200, ge=1, help="pairs held out for the test MSE (rest: training)")
    canvas_size: int = param(256, ge=32, help="side of the square canvas, pixels")
    min_size: int = param(32, ge=4, help="smallest object side, pixels")
    max_size: int = param(64, ge=4, help="largest object side, pixels")
    axis_tolerance: int = param(30, ge=0, help="max off-axis centre difference (paper: 30)")
    min_gap: int = param(4, ge=0, help="min free pixels between the two crop boxes")
    black_off_axis: bool = param(True, help="black patches only at off-axis offsets")
    two_sided: bool = param(False, help="squares left or right, triangles above or below")
    crop_margin: float = param(0.1, ge=0, le=0.5, help="crop = box grown by this x side")
    offset_scale: Literal["image", "none"] = param(
        "none", help="none: pixels; image: corner differences / canvas size (see above)"
    )
    # --- network (a CPU-sized stand-in for the paper's CNN M)
    backbone: str = param("efficientnet_lite0", help="name in the backbone registry")
    scope: str = param("fc", help="trainable part of the bottom stream; trunk is cached")
    input_size: int = param(64, ge=32, le=512, help="patches are resized to this square")
    hidden: int = param(256, ge=1, help="size of h2 in the context module")
    # --- training (both runs of Fig. 3 and the pixel run of Fig. 4 share these)
    epochs: int = param(40, ge=1)
    threads: int = param(1, ge=0, help="torch CPU threads; 0: torch's default. Tiny ops: 1")
    batch_size: int = param(64, ge=1)
    optimizer: Literal["sgd", "adam"] = param("adam", help="adam, or sgd (with momentum)")
    lr: float = param(1e-3, gt=0, help="learning rate of the feature-target runs")
    pixel_lr: float = param(1e-3, gt=0, help="learning rate of the pixel-target run")
    momentum: float = param(0.9, ge=0, lt=1)
    weight_decay: float = param(5e-4, ge=0)
    # --- Figure 4
    pixel_size: int = param(16, ge=2, le=64, help="pixel targets: top patch at this size")
    recon_epochs: tuple[int, ...] = param(
        (1, 2, 3, 5, 10, 20, 40), help="epochs after which h3 is decoded for Figure 4"
    )

    def validate(self) -> None:
        if self.min_size > self.max_size:
            raise ConfigError(
                f"synthetic.min_size: {self.min_size} is above synthetic.max_size="
                f"{self.max_size}; allowed: min_size <= max_size"
            )
        n_total = self.n_square + self.n_triangle + self.n_black
        if self.n_test >= n_total:
            raise ConfigError(
                f"synthetic.n_test: {self.n_test} leaves no training pairs; allowed: "
                f"< n_square + n_triangle + n_black = {n_total}"
            )
        # two crop boxes of the largest size side by side, plus the gap, must fit
        crop = self.max_size + 2 * math.ceil(self.crop_margin * self.max_size)
        if 2 * crop + self.min_gap > self.canvas_size:
            raise ConfigError(
                f"synthetic.canvas_size: {self.canvas_size} cannot hold two crops of "
                f"{crop} px {self.min_gap} px apart; allowed: >= {2 * crop + self.min_gap}"
            )
        bad = [e for e in self.recon_epochs if not 1 <= e <= self.epochs]
        if bad or not self.recon_epochs:
            raise ConfigError(
                f"synthetic.recon_epochs: {list(self.recon_epochs)} is not valid; allowed: "
                f"a non-empty list of epochs in 1..{self.epochs}"
            )
