"""The spatial context network: trainable bottom stream + context module (paper section 3).

    h1 = head(trunk(X_j))                 # (B, D) bottom stream, trunk frozen, head trained
    h3 = f([h1, o_ij]; V)                 # (B, D_T) the context module
    loss = || g(X_i; W_T) - h3 ||^2       # g(X_i; W_T): the frozen top stream's features

The top stream is frozen by construction: its outputs are the cached ``features`` of the
target cache. ``trunk`` is the frozen part of the bottom stream below the fine-tuning
scope (``nn.Identity`` for scope ``all``); with a trunk cache it is never run.

After training, :func:`save_trained` writes ``model.pt`` (the whole bottom stream as a
state dict of the backbone's model, the context module, the resolved config and the
provenance; another method, ``method: doersch``, writes the same bottom-stream part,
:func:`bottom_stream_payload`, without a context module) and :func:`load_trained` gives
back a :class:`TrainedNetwork` whose
``features(x)`` is h1 of the trained bottom stream and whose ``backbone`` is a
:class:`~pipeline.backbones.registry.Backbone` carrying the trained weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.errors import DataError
from pipeline.io import atomic_path, canonical
from pipeline.models.context import ContextModule, assert_frozen
from pipeline.provenance import sha256_file

log = logging.getLogger(__name__)

MODEL_FORMAT = "scn-model/1"
BN_MODES = ("frozen", "batch")
#: the training methods whose model.pt :func:`load_trained` reads (``method`` in params)
LOADABLE_METHODS = ("scn", "doersch")
#: the tensor-valued entries of model.pt, kept out of :attr:`TrainedNetwork.config`
STATE_KEYS = ("bottom_stream", "context", "classifier")


def head_train_mode(head: nn.Module, bn: str, dropout: bool) -> None:
    """The train-mode behaviours of a trained head: its BatchNorm layers use batch
    statistics only with ``bn="batch"``, everything else (dropout, drop-connect) is on
    only with ``dropout``; otherwise the head computes the original network's function."""
    for m in head.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train(bn == "batch")
        else:
            m.train(dropout)


class BottomStream(nn.Module):
    """The bottom stream every training method trains: a frozen ``trunk`` and a trainable
    ``head`` (h1), with the head's train-mode behaviours set by ``bn`` and ``dropout``.
    :class:`SCN` adds the context module, Doersch's network the pair classifier."""

    def __init__(self, trunk: nn.Module, head: nn.Module, bn: str = "frozen",
                 dropout: bool = False):  # fmt: skip
        super().__init__()
        if bn not in BN_MODES:
            raise ValueError(f"bn: {bn!r} is not a valid choice; allowed: {', '.join(BN_MODES)}")
        self.bn, self.dropout = bn, bool(dropout)
        self.trunk = trunk.requires_grad_(False).eval()
        self.head = head.requires_grad_(True)

    def train(self, mode: bool = True) -> BottomStream:
        """Training mode for what the method adds (the context module, the classifier); the
        trunk always runs in inference mode.

        In the head, BatchNorm layers use batch statistics (and update their running
        statistics) only with ``bn="batch"``; with ``bn="frozen"`` (default) they keep the
        pretrained running statistics while their affine parameters still train. The
        other train-mode behaviours of the head (dropout, EfficientNet's drop-connect)
        are on only with ``dropout=True``. With the defaults the head computes exactly
        the original network's features at step 0, as the top stream did for the targets.
        """
        super().train(mode)
        self.trunk.eval()
        if mode:
            head_train_mode(self.head, self.bn, self.dropout)
        return self

    def bottom(self, x: torch.Tensor, from_trunk: bool) -> torch.Tensor:
        """h1 of the bottom stream, (B, D)."""
        if not from_trunk:
            with torch.no_grad():
                x = self.trunk(x)  # (B, ...) frozen trunk output
        return self.head(x)  # (B, D) = h1

    def check_frozen(self) -> None:
        """The trunk stays frozen (MoCo-style sanity check, run each epoch)."""
        assert_frozen(self.trunk, "bottom-stream trunk")


class SCN(BottomStream):
    """Bottom stream (frozen ``trunk`` + trainable ``head``) and the context module.

    ``forward(x, offset, from_trunk)``: ``x`` is a trunk output row batch when
    ``from_trunk`` (the cached path), else normalised images (B, 3, S, S).
    """

    def __init__(
        self,
        trunk: nn.Module,
        head: nn.Module,
        feature_dim: int,
        target_dim: int,
        hidden: int = 1024,
        use_offset: bool = True,
        bn: str = "frozen",
        dropout: bool = False,
    ):
        super().__init__(trunk, head, bn, dropout)
        self.context = ContextModule(feature_dim, target_dim, hidden=hidden, use_offset=use_offset)

    def forward(
        self,
        x: torch.Tensor,
        offset: torch.Tensor | None,
        from_trunk: bool = True,
        h1_given: bool = False,
    ) -> torch.Tensor:
        """h3 (B, D_T). ``h1_given``: ``x`` already is h1 (B, D), e.g. the cached features of
        the untrained bottom stream while it is frozen; the bottom stream does not run."""
        h1 = x if h1_given else self.bottom(x, from_trunk)  # (B, D)
        return self.context(h1, offset)  # (B, D_T) = h3

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def build_scn(
    backbone,
    scope: str,
    target_dim: int,
    hidden: int = 1024,
    use_offset: bool = True,
    bn: str = "frozen",
    dropout: bool = False,
) -> SCN:
    """An SCN whose bottom stream starts from ``backbone``'s weights (W_B = W_T)."""
    trunk, head = backbone.split(scope)  # fresh copies, trunk frozen, head trainable
    return SCN(trunk, head, backbone.feature_dim, target_dim, hidden, use_offset, bn, dropout)


def bottom_stream_state(backbone, scope: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of ``backbone.model`` with the (trained) trunk and head of ``model``.

    The backbone's stages share their parameters with ``backbone.model``; the trunk and the
    head are sequences of copies of those stages (``Backbone.split``), loaded back stage by
    stage. ``backbone`` is modified in place (it then carries the trained weights).
    """
    start = [s.name for s in backbone.stages].index(backbone.scope_starts[scope])
    trunk = list(model.trunk) if start else []
    head = list(model.head)
    if len(trunk) + len(head) != len(backbone.stages):
        raise ValueError(
            f"model has {len(trunk)}+{len(head)} stages, backbone {backbone.name} has "
            f"{len(backbone.stages)}: not built from this backbone/scope"
        )
    for stage, module in zip(backbone.stages, trunk + head, strict=True):
        stage.module.load_state_dict(module.state_dict())
    return {k: v.detach().cpu().clone() for k, v in backbone.model.state_dict().items()}


def bottom_stream_payload(backbone, scope: str, model: nn.Module, method: str) -> dict[str, Any]:
    """The part of ``model.pt`` every method writes: the trained bottom stream (``model``'s
    ``trunk`` and ``head``, see :func:`bottom_stream_state`) and what rebuilds it."""
    if method not in LOADABLE_METHODS:
        allowed = ", ".join(LOADABLE_METHODS)
        raise ValueError(f"method: {method!r} is not a valid choice; allowed: {allowed}")
    return {
        "format": MODEL_FORMAT,
        "method": method,
        "backbone": backbone.name,
        "input_size": int(backbone.input_size),
        "scope": scope,
        "layer": backbone.layer,
        "mean": list(backbone.mean),
        "std": list(backbone.std),
        "feature_dim": int(backbone.feature_dim),
        "bottom_stream": bottom_stream_state(backbone, scope, model),
    }


def write_trained(path: str | Path, payload: dict[str, Any]) -> None:
    """Write a ``model.pt`` payload atomically; the same content gives the same bytes."""
    with atomic_path(path) as tmp:
        torch.save(canonical(payload), tmp)  # same content, same bytes (DVC hashes it)


def save_trained(
    path: str | Path,
    model: SCN,
    backbone,
    scope: str,
    config: dict[str, Any],
    provenance: dict[str, Any],
    history: list[dict[str, float]] | None = None,
) -> None:
    """Write ``model.pt`` atomically: bottom stream, context module, config, provenance.

    ``backbone`` is a freshly built backbone of the same name/input size (its stages are
    overwritten with the trained weights). Only plain types and tensors are stored, so
    the file loads with ``torch.load(weights_only=True)``.
    """
    ctx = model.context
    payload = {
        **bottom_stream_payload(backbone, scope, model, "scn"),
        "target_dim": int(ctx.v2.out_features),
        "hidden": int(ctx.v1.out_features),
        "use_offset": bool(ctx.use_offset),
        "context": {k: v.detach().cpu().clone() for k, v in ctx.state_dict().items()},
        "config": config,
        "provenance": provenance,
        "history": history or [],
    }
    write_trained(path, payload)


@dataclass
class TrainedNetwork:
    """A trained SCN loaded from ``model.pt`` (eval mode, frozen, on ``device``).

    ``features(x)``: h1 of the trained bottom stream for normalised images (B, 3, S, S);
    ``context(h1, offset)``: h3 predicted by the context module (``context_module`` is
    None for a method without one, ``method: doersch``); ``backbone``: a Backbone
    whose model/stages carry the trained bottom-stream weights (``detection_parts()``,
    ``split()`` work on it); ``config``: the resolved config sections saved by the train
    stage (``train``, ``network``, ...) plus the model metadata (``backbone``, ``scope``,
    ``input_size``, ``mean``, ``std``, ``provenance``, ``history``, ...).
    """

    backbone: Any
    trunk: nn.Module
    head: nn.Module
    context_module: ContextModule | None
    config: dict[str, Any]
    path: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def input_size(self) -> int:
        return int(self.config["input_size"])

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.config["mean"])

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.config["std"])

    @property
    def feature_dim(self) -> int:
        return int(self.config["feature_dim"])

    @property
    def use_offset(self) -> bool:
        return bool(self.config.get("use_offset", False))

    @property
    def method(self) -> str:
        """The training method that wrote the model (``scn`` or ``doersch``)."""
        return str(self.config.get("method", "scn"))

    def to(self, device: str | torch.device) -> TrainedNetwork:
        self.device = torch.device(device)
        for m in (self.trunk, self.head, self.context_module, self.backbone.model):
            if m is not None:
                m.to(self.device)
        return self

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised images -> (B, D) h1 of the trained bottom stream."""
        x = x.to(self.device)
        return self.head(self.trunk(x))  # (B, D)

    @torch.no_grad()
    def context(self, h1: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) h1 and (B, 8) offsets -> (B, D_T) h3."""
        if self.context_module is None:
            raise ValueError(
                f"{self.path}: trained by method {self.method!r}, which has no context "
                "module (h3); allowed: a model of method 'scn'"
            )
        h1 = h1.to(self.device)
        offset = offset.to(self.device) if offset is not None else None
        if not self.use_offset:
            offset = None
        return self.context_module(h1, offset)  # (B, D_T)


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> TrainedNetwork:
    """Load ``model.pt`` written by the train stage into a :class:`TrainedNetwork`."""
    from pipeline.backbones import build_backbone

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "trained model not found (run the train stage)", "missing_file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise DataError(path, f"not a readable model file: {err}") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise DataError(path, f"format {got!r}; allowed: {MODEL_FORMAT}")
    method = payload.get("method", "scn")  # files written before the method switch: scn
    if method not in LOADABLE_METHODS:
        raise DataError(path, f"method {method!r}; allowed: {', '.join(LOADABLE_METHODS)}")
    bb = build_backbone(payload["backbone"], pretrained=False, input_size=payload["input_size"])
    try:
        bb.model.load_state_dict(payload["bottom_stream"], strict=True)
    except RuntimeError as err:
        raise DataError(path, f"bottom stream does not fit {payload['backbone']}: {err}") from None
    bb.model.eval().requires_grad_(False)
    bb.weights_path, bb.weights_sha256 = str(path), sha256_file(path)
    trunk, head = bb.split(payload["scope"])
    head.eval().requires_grad_(False)
    ctx = None
    if "context" in payload:  # the SCN's context module
        ctx = ContextModule(
            payload["feature_dim"],
            payload["target_dim"],
            hidden=payload["hidden"],
            use_offset=payload["use_offset"],
        )
        ctx.load_state_dict(payload["context"])
        ctx.eval().requires_grad_(False)
    meta = {k: v for k, v in payload.items() if k not in (*STATE_KEYS, "config")}
    config = {**payload["config"], **meta}  # train/network/... sections + model metadata
    return TrainedNetwork(bb, trunk, head, ctx, config, path).to(device)
