"""Float comparisons relative to the scale of the compared output.

An element-wise tolerance (``rtol`` on each element plus a fixed ``atol``) fails at
random on another CPU: a float32 network output near zero gets an absolute rounding
error of the order of the output's *scale* times machine epsilon (accumulated over the
layers), whatever its own value, and CPUs with other SIMD kernels (AVX2, AVX-512, ARM)
round differently. Comparing the largest absolute difference to the largest absolute
expected value holds on any of them.
"""

from __future__ import annotations

import numpy as np
import torch

NETWORK_REL = 1e-4  # float32 network outputs: ~100x the rounding of one CPU's kernels vs another's


def _array(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return x.double().numpy() if x.is_floating_point() else x.numpy().astype(np.float64)
    return np.asarray(x, dtype=np.float64)


def _diff_and_scale(actual, expected, what: str) -> tuple[float, float]:
    a, b = _array(actual), _array(expected)
    assert a.shape == b.shape, f"{what} shape {a.shape} != {b.shape}"
    assert np.isfinite(a).all() and np.isfinite(b).all(), f"{what} has NaN or inf"
    if not b.size:
        return 0.0, 0.0
    return float(np.abs(a - b).max()), float(np.abs(b).max())


def rel_diff(actual, expected, what: str = "") -> float:
    """``max |actual - expected| / max |expected|`` (inf when only the expected is zero)."""
    diff, scale = _diff_and_scale(actual, expected, what)
    return diff / scale if scale else (0.0 if diff == 0 else float("inf"))


def assert_close_rel(actual, expected, rel: float = NETWORK_REL, what: str = "") -> None:
    """``max |actual - expected| <= rel * max |expected|`` (same shapes; NaN fails).

    ``rel`` is relative to the scale of the whole expected output, not to each element:
    1e-4 for float32 network outputs; an expected output of zeros must be matched exactly.
    """
    diff, scale = _diff_and_scale(actual, expected, what)
    assert diff <= rel * scale, (
        f"{what} greatest absolute difference {diff:.3g} > {rel:g} x scale {scale:.3g} "
        f"(relative to the scale: {diff / scale if scale else float('inf'):.3g})"
    )
