"""Patch cropping, resizing and normalisation shared by every stage that feeds a backbone.

Crops use RoIAlign-style bilinear sampling (``torchvision.ops.roi_align`` with
``aligned=True``): each output pixel of a box's ``S x S`` grid averages bilinear samples
of the image at ``ceil(box_side / S)`` points per side (``sampling_ratio=-1``), so a
large box is downscaled with area averaging and a small box upscaled bilinearly. Boxes
are in the project convention (``x1, y1, x2, y2``, continuous pixel coordinates, origin
at the top-left corner of the top-left pixel, see docs/artifacts.md), so fractional
boxes are honoured exactly; the aspect ratio is not kept (R-CNN-style warp).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.ops import roi_align


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image: expected an (H, W, 3) uint8 array, got {image.shape} {image.dtype}"
        )


def crop_resize(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Crop ``boxes`` (K, 4) from ``image`` (H, W, 3) uint8 -> (K, 3, S, S) float32 in [0, 1].

    Every box must have positive width and height.
    """
    _check_image(image)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros((0, 3, size, size), dtype=np.float32)
    bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if bad.any():
        raise ValueError(f"boxes: {boxes[bad][:3].tolist()} have no area")
    if not image.flags.writeable or not image.flags.c_contiguous:
        image = np.array(image, order="C")  # torch wants a writable buffer
    img = torch.from_numpy(image).permute(2, 0, 1)  # (3, H, W) uint8
    img = img.unsqueeze(0).float().div_(255.0)  # (1, 3, H, W)
    rois = torch.from_numpy(boxes)  # (K, 4)
    with torch.no_grad():
        out = roi_align(img, [rois], output_size=(size, size), sampling_ratio=-1, aligned=True)
    return out.clamp_(0.0, 1.0).numpy()  # (K, 3, S, S)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """The whole image (H, W, 3) uint8 resized (warped) to (3, S, S) float32 in [0, 1]."""
    _check_image(image)
    h, w = image.shape[:2]
    box = np.array([[0.0, 0.0, w, h]], dtype=np.float32)
    return crop_resize(image, box, size)[0]


def normalize(x, mean: Sequence[float], std: Sequence[float]):
    """(..., 3, S, S) in [0, 1] -> (x - mean) / std per channel; numpy or torch in, same out."""
    if isinstance(x, torch.Tensor):
        m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
        s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x - m) / s
    x = np.asarray(x)
    dtype = x.dtype if x.dtype.kind == "f" else np.float32
    m = np.asarray(mean, dtype=dtype).reshape(3, 1, 1)
    s = np.asarray(std, dtype=dtype).reshape(3, 1, 1)
    return ((x - m) / s).astype(dtype, copy=False)
