"""Fast R-CNN (Girshick 2015) over precomputed proposals, on any registered backbone.

The model: the backbone's conv body on the whole (resized, possibly flipped) image,
``torchvision.ops`` RoIAlign (or RoIPool) of each proposal on its feature map, the
backbone's own top layers as the RoI head (VGG/AlexNet fc6/fc7, EfficientNet's head
conv + pooling, see ``Backbone.detection_parts``), then a softmax classifier over the
classes plus background and per-class box regression (torchvision's ``BoxCoder`` with
the Fast R-CNN target normalisation ``(10, 10, 5, 5)`` and ``fastrcnn_loss``).

The coordinate-frame trap (pytorch/vision issue 1477): proposals are stored in the
frame of the original image; the network sees the image after the Fast R-CNN rescale
(shorter side ``min_size``, longer side at most ``max_size``) and maybe a horizontal
flip. :func:`to_network_frame` applies exactly the same resize and flip to the boxes,
and :func:`from_network_frame` maps predictions back; nothing else ever touches the
geometry, and tests check that a proposal equal to a ground-truth box pools the
ground-truth region of the resized, flipped image.

Training follows Fast R-CNN: each iteration takes ``images_per_batch`` images (each
image appears once unflipped and once flipped per epoch, in a seeded random order) and
samples ``rois_per_image`` RoIs per image, at most ``fg_fraction`` of them foreground
(IoU >= ``fg_iou`` with a ground truth, ground-truth boxes themselves included) and
the rest background (IoU in ``[bg_iou_low, bg_iou_high)``); SGD with momentum, weight
decay and one learning-rate step. BatchNorm layers stay frozen (eval mode, fixed
affine), as usual for detection with small batches. With ``train_body`` false the
conv body is frozen too and its feature maps are computed once per (image, flip) and
kept in memory (up to ``feature_cache_mb``), which is what makes the CPU default fast.

At test time: softmax scores, per-class box decoding on the proposals, clipping to the
image, a score threshold, per-class NMS and at most ``max_detections`` per image.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.ops import RoIAlign, RoIPool, batched_nms, box_iou, clip_boxes_to_image
from tqdm import tqdm

from pipeline.evaluate.config import DetectConfig

log = logging.getLogger(__name__)

BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # Fast R-CNN's target std (0.1, 0.1, 0.2, 0.2)


# --------------------------------------------------------------------------- geometry


def rescale_factor(width: int, height: int, min_size: int, max_size: int) -> float:
    """Fast R-CNN's image scale: shorter side to ``min_size`` unless the longer side
    would exceed ``max_size``, then longer side to ``max_size``."""
    scale = min_size / min(width, height)
    if scale * max(width, height) > max_size:
        scale = max_size / max(width, height)
    return scale


def resized_shape(width: int, height: int, min_size: int, max_size: int) -> tuple[int, int]:
    """(new_width, new_height) of the rescaled image (rounded to whole pixels)."""
    s = rescale_factor(width, height, min_size, max_size)
    return max(1, round(width * s)), max(1, round(height * s))


def to_network_frame(
    boxes: np.ndarray, size: tuple[int, int], new_size: tuple[int, int], flip: bool
) -> np.ndarray:
    """Map (N, 4) boxes from the original image frame ``size`` = (w, h) into the frame of
    the image resized to ``new_size`` = (w', h') and then flipped horizontally if ``flip``.

    Per-axis scales ``w'/w`` and ``h'/h`` are exact for the resized pixel grid; the flip
    of a continuous box is ``x1' = w' - x2, x2' = w' - x1``.
    """
    sx, sy = new_size[0] / size[0], new_size[1] / size[1]
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * np.float32([sx, sy, sx, sy])
    if flip:
        out = np.stack([new_size[0] - out[:, 2], out[:, 1], new_size[0] - out[:, 0], out[:, 3]], 1)
    return out.astype(np.float32)


def from_network_frame(
    boxes: torch.Tensor, size: tuple[int, int], new_size: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`to_network_frame` without flip: (N, 4) network -> original frame."""
    sx, sy = new_size[0] / size[0], new_size[1] / size[1]
    return boxes / boxes.new_tensor([sx, sy, sx, sy])


def prepare_image(
    image: np.ndarray,
    new_size: tuple[int, int],
    flip: bool,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, h', w') float32, resized (bilinear), flipped, normalised."""
    resized = cv2.resize(image, new_size, interpolation=cv2.INTER_LINEAR)  # (h', w', 3)
    if flip:
        resized = resized[:, ::-1]
    x = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).float() / 255.0
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (x - m) / s  # (3, h', w')


def pad_batch(images: Sequence[torch.Tensor], multiple: int = 1) -> torch.Tensor:
    """Zero-pad (3, h_i, w_i) images at the bottom/right into one (B, 3, H, W) batch."""
    h = max(im.shape[1] for im in images)
    w = max(im.shape[2] for im in images)
    h, w = math.ceil(h / multiple) * multiple, math.ceil(w / multiple) * multiple
    out = images[0].new_zeros((len(images), 3, h, w))
    for i, im in enumerate(images):
        out[i, :, : im.shape[1], : im.shape[2]] = im
    return out  # (B, 3, H, W)


# --------------------------------------------------------------------------- sampling


def sample_rois(
    proposals: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    cfg: DetectConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fast R-CNN minibatch sampling for one image (py-faster-rcnn ``_sample_rois``).

    ``proposals`` (P, 4) in the network frame, ground truth included by the caller when
    wanted; ``gt_boxes`` (G, 4), ``gt_labels`` (G,) in 1..K. Foreground: max IoU >=
    ``fg_iou``, at most ``round(fg_fraction * rois_per_image)``; background: max IoU in
    ``[bg_iou_low, bg_iou_high)``, filling the rest; both drawn without replacement, so
    an image short of candidates gives fewer RoIs. Returns (rois (R, 4), labels (R,) with
    0 = background, matched gt boxes (R, 4)).
    """
    if len(gt_boxes):
        iou = box_iou(proposals, gt_boxes)  # (P, G)
        max_iou, argmax = iou.max(dim=1)  # (P,), (P,)
    else:
        max_iou = proposals.new_zeros(len(proposals))
        argmax = torch.zeros(len(proposals), dtype=torch.long)
    fg = torch.where(max_iou >= cfg.fg_iou)[0]
    bg = torch.where((max_iou >= cfg.bg_iou_low) & (max_iou < cfg.bg_iou_high))[0]
    n_fg = min(round(cfg.fg_fraction * cfg.rois_per_image), len(fg))
    fg = fg[torch.randperm(len(fg), generator=generator)[:n_fg]]
    n_bg = min(cfg.rois_per_image - n_fg, len(bg))
    bg = bg[torch.randperm(len(bg), generator=generator)[:n_bg]]
    keep = torch.cat([fg, bg])
    labels = torch.zeros(len(keep), dtype=torch.long)
    if len(gt_boxes):
        labels[:n_fg] = gt_labels[argmax[fg]]
        matched = gt_boxes[argmax[keep]]  # (R, 4)
    else:
        matched = proposals[keep].clone()
    return proposals[keep], labels, matched


# --------------------------------------------------------------------------- the model


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm of ``module`` in eval mode with frozen affine parameters."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)


class FastRCNN(nn.Module):
    """Conv body -> RoI pooling -> backbone top layers -> classifier + box regressor.

    ``body``: normalised images (B, 3, H, W) -> (B, C, H/stride, W/stride);
    ``roi_head``: (R, C, roi_size, roi_size) -> (R, D). ``num_classes`` excludes the
    background (index 0 of the classifier).
    """

    def __init__(
        self,
        body: nn.Module,
        stride: int,
        roi_size: int,
        roi_head: nn.Module,
        feature_dim: int,
        num_classes: int,
        roi_op: str = "align",
        train_body: bool = True,
    ):
        super().__init__()
        self.body = body
        self.stride = int(stride)
        self.roi_head = roi_head
        self.num_classes = num_classes
        self.train_body = train_body
        scale = 1.0 / self.stride
        if roi_op == "align":
            self.roi_pool = RoIAlign((roi_size, roi_size), scale, sampling_ratio=2, aligned=True)
        elif roi_op == "pool":
            self.roi_pool = RoIPool((roi_size, roi_size), scale)
        else:
            raise ValueError(f"roi_op: {roi_op!r} is not valid; allowed: align, pool")
        self.cls_score = nn.Linear(feature_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(feature_dim, 4 * (num_classes + 1))
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        freeze_batchnorm(self)
        if not train_body:
            for p in self.body.parameters():
                p.requires_grad_(False)

    def frozen_body_digest(self) -> str:
        """Digest of the frozen body's weights (computed once: a frozen body never changes)."""
        if self.train_body:
            raise RuntimeError("the body is trainable; its features cannot be cached")
        if not hasattr(self, "_body_digest"):
            self._body_digest = body_digest(self.body)
        return self._body_digest

    def train(self, mode: bool = True) -> FastRCNN:
        super().train(mode)
        freeze_batchnorm(self)
        if not self.train_body:
            self.body.eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, C, h, w) conv features."""
        with torch.set_grad_enabled(self.train_body and torch.is_grad_enabled()):
            return self.body(images)  # (B, C, h, w)

    def head(
        self, features: torch.Tensor, rois: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """RoIs (list of (R_i, 4) in the network frame) -> class logits (R, K+1) and box
        deltas (R, 4(K+1)), R = sum R_i, in the order of the list."""
        pooled = self.roi_pool(features, list(rois))  # (R, C, k, k)
        h = self.roi_head(pooled)  # (R, D)
        h = h.flatten(1)  # (R, D)
        return self.cls_score(h), self.bbox_pred(h)  # (R, K+1), (R, 4(K+1))

    def forward(
        self, images: torch.Tensor, rois: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.features(images), rois)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DetectionImage:
    """One image for detection: proposals and ground truth in the original frame."""

    id: str
    width: int
    height: int
    proposals: np.ndarray  # (P, 4) float32
    gt_boxes: np.ndarray  # (G, 4) float32, non-difficult only for training
    gt_labels: np.ndarray  # (G,) int64 in 1..K
    gt_difficult: np.ndarray  # (G,) bool


def body_digest(body: nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, shapes, values)."""
    h = hashlib.sha256()
    for name, t in sorted(body.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class FeatureSource:
    """Network-frame inputs of a list of images: the resized, flipped, normalised image
    tensors and, for a frozen body, a cache of its feature maps per (image, flip).

    One source serves a split; ``cache`` may be shared by two models whose frozen bodies
    are identical (the original and the SCN backbone share their body when the SCN
    fine-tuning scope lies inside the RoI head), so each feature map is computed once.
    """

    def __init__(
        self,
        images: Sequence[DetectionImage],
        load_image: Callable[[int], np.ndarray],
        mean: Sequence[float],
        std: Sequence[float],
        min_size: int,
        max_size: int,
        cache_mb: int = 0,
    ):
        self.images, self.load_image = images, load_image
        self.mean, self.std, self.min_size, self.max_size = mean, std, min_size, max_size
        self.cache: dict[tuple[int, bool], torch.Tensor] = {}
        self.cache_limit, self.cache_bytes = cache_mb * 2**20, 0
        self.body_digest = ""  # the frozen body whose features are cached

    def new_size(self, i: int) -> tuple[int, int]:
        im = self.images[i]
        return resized_shape(im.width, im.height, self.min_size, self.max_size)

    def tensor(self, i: int, flip: bool) -> torch.Tensor:
        """(3, h', w') normalised image ``i`` in the network frame."""
        return prepare_image(self.load_image(i), self.new_size(i), flip, self.mean, self.std)

    def features(
        self, model: FastRCNN, items: Sequence[tuple[int, bool]], device: torch.device
    ) -> torch.Tensor:
        """Features (B, C, h, w) of the items (image index, flip), zero-padded together."""
        if model.train_body or self.cache_limit <= 0:
            batch = pad_batch([self.tensor(i, f) for i, f in items], model.stride)
            return model.features(batch.to(device))  # (B, C, h, w)
        digest = model.frozen_body_digest()
        if digest != self.body_digest:  # another body: its features differ
            self.cache.clear()
            self.cache_bytes, self.body_digest = 0, digest
        feats = []
        for key in items:
            f = self.cache.get(key)
            if f is None:
                with torch.no_grad():
                    x = pad_batch([self.tensor(*key)], model.stride)  # (1, 3, H, W)
                    f = model.features(x.to(device))[0]  # (C, h, w)
                size = f.element_size() * f.nelement()
                if self.cache_bytes + size <= self.cache_limit:
                    self.cache[key] = f
                    self.cache_bytes += size
            feats.append(f)
        h = max(f.shape[1] for f in feats)
        w = max(f.shape[2] for f in feats)
        out = feats[0].new_zeros((len(feats), feats[0].shape[0], h, w))
        for b, f in enumerate(feats):
            out[b, :, : f.shape[1], : f.shape[2]] = f
        return out  # (B, C, h, w)


def _roi_targets(
    im: DetectionImage,
    new_size: tuple[int, int],
    flip: bool,
    cfg: DetectConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    props = to_network_frame(im.proposals, (im.width, im.height), new_size, flip)
    gt = to_network_frame(im.gt_boxes, (im.width, im.height), new_size, flip)
    if cfg.add_gt_rois and len(gt):
        props = np.concatenate([props, gt])
    return sample_rois(
        torch.from_numpy(props),
        torch.from_numpy(gt),
        torch.from_numpy(im.gt_labels.astype(np.int64)),
        cfg,
        generator,
    )


def train_fast_rcnn(
    model: FastRCNN,
    source: FeatureSource,
    cfg: DetectConfig,
    seed: int,
    device: torch.device,
    desc: str = "fast r-cnn",
) -> list[dict]:
    """Train ``model`` in place; returns the loss history (one dict per iteration).

    Only images with at least one (non-difficult) ground-truth box are used, as in
    py-faster-rcnn. The image order, flips and RoI sampling come from ``seed`` alone.
    """
    images = source.images
    usable = [i for i, im in enumerate(images) if len(im.gt_boxes)]
    if not usable:
        raise ValueError("no training image has a ground-truth box")
    generator = torch.Generator().manual_seed(seed)
    box_coder = BoxCoder(BOX_CODER_WEIGHTS)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
    flips = (False, True) if cfg.flip else (False,)
    order: list[tuple[int, bool]] = []
    history = []
    bar = tqdm(range(cfg.iterations), desc=desc, leave=False, mininterval=5.0)
    for it in bar:
        items = []
        while len(items) < cfg.images_per_batch:
            if not order:
                epoch = [(i, f) for i in usable for f in flips]
                perm = torch.randperm(len(epoch), generator=generator).tolist()
                order = [epoch[k] for k in perm]
            items.append(order.pop())
        rois, labels, targets = [], [], []
        for i, flip in items:
            r, lab, matched = _roi_targets(images[i], source.new_size(i), flip, cfg, generator)
            rois.append(r.to(device))
            labels.append(lab.to(device))
            targets.append(box_coder.encode_single(matched, r).to(device))  # (R_i, 4)
        if sum(len(r) for r in rois) == 0:  # no candidate in range (add_gt_rois off)
            log.debug("iteration %d: no RoI to sample in images %s", it + 1, items)
            sched.step()
            continue
        feats = source.features(model, items, device)  # (B, C, h, w)
        logits, deltas = model.head(feats, rois)  # (R, K+1), (R, 4(K+1))
        loss_cls, loss_box = fastrcnn_loss(logits, deltas, labels, targets)
        loss = loss_cls + loss_box
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        n_fg = int(sum(int((lab > 0).sum()) for lab in labels))
        history.append(
            {
                "iteration": it + 1,
                "loss": loss.item(),
                "loss_cls": loss_cls.item(),
                "loss_box": loss_box.item(),
                "rois": int(sum(len(lab) for lab in labels)),
                "fg": n_fg,
                "lr": opt.param_groups[0]["lr"],
            }
        )
        if (it + 1) % max(1, cfg.iterations // 10) == 0:
            recent = history[-max(1, cfg.iterations // 10) :]
            log.info(
                "%s: iteration %d/%d, loss %.4f (cls %.4f, box %.4f)",
                desc,
                it + 1,
                cfg.iterations,
                np.mean([h["loss"] for h in recent]),
                np.mean([h["loss_cls"] for h in recent]),
                np.mean([h["loss_box"] for h in recent]),
            )
    model.eval()
    return history


def _no_detections() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)


@torch.no_grad()
def detect(
    model: FastRCNN,
    source: FeatureSource,
    score_thresh: float,
    nms_thresh: float,
    max_detections: int,
    device: torch.device,
    desc: str = "detect",
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Detections of every image of ``source``: per image boxes (N, 4) in the original
    frame, scores (N,) and labels (N,) in 0..K-1 (class indices, background removed)."""
    model.to(device).eval()
    coder = BoxCoder(BOX_CODER_WEIGHTS)
    out = []
    for i, im in enumerate(tqdm(source.images, desc=desc, leave=False, mininterval=5.0)):
        if len(im.proposals) == 0:
            out.append(
                (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
            )
            continue
        new_size = source.new_size(i)
        rois = to_network_frame(im.proposals, (im.width, im.height), new_size, False)
        rois_t = torch.from_numpy(rois).to(device)  # (P, 4)
        feats = source.features(model, [(i, False)], device)  # (1, C, h, w)
        logits, deltas = model.head(feats, [rois_t])  # (P, K+1), (P, 4(K+1))
        out.append(
            postprocess(
                logits,
                deltas,
                rois_t,
                new_size,
                (im.width, im.height),
                coder,
                score_thresh,
                nms_thresh,
                max_detections,
            )
        )
    return out


def postprocess(
    logits: torch.Tensor,
    deltas: torch.Tensor,
    rois: torch.Tensor,
    new_size: tuple[int, int],
    size: tuple[int, int],
    coder: BoxCoder,
    score_thresh: float,
    nms_thresh: float,
    max_detections: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class logits (P, K+1) and deltas (P, 4(K+1)) on network-frame ``rois`` (P, 4) ->
    boxes (N, 4) in the original frame ``size``, scores (N,), labels (N,) in 0..K-1."""
    probs = torch.softmax(logits, dim=1)  # (P, K+1)
    boxes = coder.decode(deltas, [rois])  # (P, K+1, 4)
    boxes = clip_boxes_to_image(boxes, (new_size[1], new_size[0]))  # (P, K+1, 4)
    boxes, probs = boxes[:, 1:], probs[:, 1:]  # drop background: (P, K, 4), (P, K)
    labels = torch.arange(probs.shape[1], device=probs.device).expand_as(probs)  # (P, K)
    boxes, probs, labels = boxes.reshape(-1, 4), probs.reshape(-1), labels.reshape(-1)
    keep = torch.where(probs > score_thresh)[0]
    boxes, probs, labels = boxes[keep], probs[keep], labels[keep]
    wh = boxes[:, 2:] - boxes[:, :2]  # (N, 2)
    keep = torch.where((wh[:, 0] > 1e-2) & (wh[:, 1] > 1e-2))[0]
    boxes, probs, labels = boxes[keep], probs[keep], labels[keep]
    keep = batched_nms(boxes, probs, labels, nms_thresh)[:max_detections]
    boxes = from_network_frame(boxes[keep], size, new_size)  # (N, 4)
    return (
        boxes.cpu().numpy().astype(np.float32),
        probs[keep].cpu().numpy().astype(np.float32),
        labels[keep].cpu().numpy().astype(np.int64),
    )
