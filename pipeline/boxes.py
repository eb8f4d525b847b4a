"""Box geometry on numpy arrays: IoU and the corner offsets of a pair, in one place.

Boxes are ``(x1, y1, x2, y2)`` in continuous image coordinates (the project's convention,
:mod:`pipeline.data.voc`): width ``x2 - x1``, no ``+1``. Every IoU is float64 and 0 where
the union is empty.

The torch code paths keep torchvision's ``box_iou`` on tensors: the Fast R-CNN RoI sampler
(:mod:`pipeline.evaluate.detect.fast_rcnn`) and the proposals' recall
(:func:`pipeline.proposals.stage.recall_at`, float32, as its recorded metrics were made).
"""

from __future__ import annotations

import numpy as np

# corner order of an offset: top-left, top-right, bottom-left, bottom-right, each (x, y)
CORNERS = [0, 1, 2, 1, 0, 3, 2, 3]  # x1 y1 | x2 y1 | x1 y2 | x2 y2
OFFSET_SCALES = ("image", "none")


def as_boxes(boxes: np.ndarray) -> np.ndarray:
    """``boxes`` as a (K, 4) float64 array."""
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def area(boxes: np.ndarray) -> np.ndarray:
    """(K,) areas of (K, 4) boxes."""
    b = as_boxes(boxes)
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def _ratio(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(K, G) IoU of every box of ``a`` (K, 4) with every box of ``b`` (G, 4)."""
    a, b = as_boxes(a), as_boxes(b)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)  # (K, G)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return _ratio(inter, union)


def pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M,) IoU of each row's two boxes, ``a`` (M, 4) and ``b`` (M, 4)."""
    a, b = as_boxes(a), as_boxes(b)
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = w * h  # (M,)
    union = area(a) + area(b) - inter
    return _ratio(inter, union)


def corners(boxes: np.ndarray) -> np.ndarray:
    """(K, 4) ``(x1, y1, x2, y2)`` -> (K, 8) ``(x, y)`` of TL, TR, BL, BR."""
    return as_boxes(boxes)[:, CORNERS]


def corner_offsets(
    top: np.ndarray, bottom: np.ndarray, width: float, height: float, scale: str = "image"
) -> np.ndarray:
    """(M, 8) float32 ``o_ij = b_i - b_j`` over the corners (:data:`CORNERS`) of ``top``
    (M, 4), the b_i, and ``bottom`` (M, 4), the b_j; ``scale='image'`` divides x by
    ``width`` and y by ``height``, ``'none'`` keeps pixels."""
    off = corners(top) - corners(bottom)  # (M, 8)
    if scale == "image":
        off[:, 0::2] /= width  # x of TL, TR, BL, BR
        off[:, 1::2] /= height  # y
    elif scale != "none":
        raise ValueError(f"offset scale {scale!r}; allowed: {', '.join(OFFSET_SCALES)}")
    return off.astype(np.float32)
