"""The backbone registry: every entry builds, splits exactly, stays frozen, loads weights."""

from __future__ import annotations

import contextlib
import copy
import io
import urllib.error
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch

from pipeline.backbones import BACKBONES, WeightsUnavailable, build_backbone
from pipeline.backbones.config import Scope
from pipeline.backbones.preprocess import normalize, resize_image
from pipeline.config import ConfigError
from tests.helpers.numeric import assert_close_rel

SIZE = 64
FEATURE_DIMS = {"efficientnet_lite0": 1280, "vgg19": 4096, "alexnet": 4096, "resnet50": 2048}
CASES = [
    pytest.param(name, marks=pytest.mark.slow) if name == "vgg19" else name for name in BACKBONES
]


@pytest.mark.parametrize("name", CASES)
def test_every_entry_splits_exactly_and_stays_frozen(name: str) -> None:
    torch.manual_seed(0)
    bb = build_backbone(name, pretrained=False, input_size=SIZE)
    assert bb.name == name and bb.input_size == SIZE and bb.weights_sha256 == ""
    assert bb.feature_dim == FEATURE_DIMS[name] and bb.scopes[0] == "fc"
    assert set(bb.scopes) == set(get_args(Scope))  # network.scope's choices, each built
    assert not bb.model.training
    assert not any(p.requires_grad for p in bb.model.parameters())
    x = torch.randn(2, 3, SIZE, SIZE)  # (B, 3, S, S)
    feats = bb.features(x)  # (B, D)
    assert feats.shape == (2, bb.feature_dim) and torch.isfinite(feats).all()
    model_params = {p.data_ptr() for p in bb.model.parameters()}
    trunk_sizes = []
    for scope in bb.scopes:
        trunk, head = bb.split(scope)
        with torch.no_grad():
            t = trunk(x)
            out = head(t)  # (B, D)
        assert torch.equal(out, feats), f"{name}/{scope}: head(trunk(x)) != features(x)"
        assert not any(p.requires_grad for p in trunk.parameters())
        head_params = list(head.parameters())
        assert head_params and all(p.requires_grad for p in head_params)
        ptrs = {p.data_ptr() for p in [*trunk.parameters(), *head_params]}
        assert not ptrs & model_params, "split must deep-copy, not share parameters"
        trunk_sizes.append(len(list(trunk.parameters())))
        if scope == "all":
            assert isinstance(trunk, torch.nn.Identity) and bb.trunk_layer(scope) == "input"
        else:
            assert bb.trunk_layer(scope) != "input"
    assert trunk_sizes[0] > trunk_sizes[1] > trunk_sizes[2] == 0  # fc < fc+conv5 < all
    # training the head does not move the frozen model
    trunk, head = bb.split("fc")
    head.train()
    loss = head(trunk(x)).pow(2).sum()
    loss.backward()
    assert all(p.grad is not None for p in head.parameters())
    assert torch.equal(bb.features(x), feats)


@pytest.mark.parametrize("name", [n for n in BACKBONES if n != "vgg19"])
def test_weights_are_channels_last_everywhere_and_compute_the_same(name: str) -> None:
    torch.manual_seed(0)
    bb = build_backbone(name, pretrained=False, input_size=SIZE)
    trunk, head = bb.split("fc")
    body, _, _, roi_head = bb.detection_parts()
    for part in (bb.model, *(s.module for s in bb.stages), trunk, head, body, roi_head):
        convs = [p for p in part.parameters() if p.dim() == 4]
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert any(p.dim() == 4 for p in bb.model.parameters())
    # the same network in torch's default layout (one deep copy: stages share the model's
    # tensors): equal outputs up to float rounding, from the same NCHW input; the other
    # layout runs other kernels, so the rounding is relative to the output's scale (an
    # element near zero differed by 1.1e-5, 0.5% of itself, on an AVX-512 CPU: issue 26)
    plain = copy.deepcopy(bb)
    for part in (plain.model, *(s.module for s in plain.stages)):
        part.to(memory_format=torch.contiguous_format)
    conv = next(p for p in plain.model.parameters() if p.dim() == 4 and p.shape[-1] > 1)
    assert not conv.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, SIZE, SIZE)  # (B, 3, S, S)
    assert_close_rel(bb.features(x), plain.features(x))


@pytest.mark.parametrize("name", [n for n in BACKBONES if n != "vgg19"])
def test_detection_parts_compose(name: str) -> None:
    bb = build_backbone(name, pretrained=False, input_size=SIZE)
    body, stride, roi_size, roi_head = bb.detection_parts()
    x = torch.randn(1, 3, 96, 128)  # (1, 3, H, W) any size
    with torch.no_grad():
        fmap = body(x)  # (1, C, h, w)
        assert fmap.shape[-1] == pytest.approx(128 / stride, abs=1.5)
        rois = torch.randn(3, fmap.shape[1], roi_size, roi_size)  # (R, C, r, r)
        assert roi_head(rois).shape == (3, bb.feature_dim)
    assert {p.data_ptr() for p in roi_head.parameters()}.isdisjoint(
        p.data_ptr() for p in bb.model.parameters()
    )


def test_unknown_name_and_scope_are_refused() -> None:
    with pytest.raises(ConfigError, match="allowed: efficientnet_lite0"):
        build_backbone("googlenet")
    bb = build_backbone("alexnet", pretrained=False, input_size=SIZE)
    with pytest.raises(ConfigError, match=r"network.scope: 'conv3'.*allowed: fc, fc\+conv5, all"):
        bb.split("conv3")


def test_efficientnet_real_weights_are_loaded_silently_and_predict_sensibly() -> None:
    from sklearn.datasets import load_sample_images
    from torchvision.models import ResNet50_Weights

    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]  # ImageNet class names
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        bb = build_backbone("efficientnet_lite0")
    assert out.getvalue() == ""
    assert len(bb.weights_sha256) == 64 and Path(bb.weights_path).is_file()
    china, flower = load_sample_images().images
    x = np.stack([normalize(resize_image(im, 224), bb.mean, bb.std) for im in (china, flower)])
    with torch.no_grad():
        top5 = bb.model(torch.from_numpy(x)).topk(5, dim=1).indices  # (2, 5)
    china_top = {categories[i] for i in top5[0].tolist()}
    flower_top = {categories[i] for i in top5[1].tolist()}
    buildings = {"bell cote", "monastery", "stupa", "palace", "castle", "church", "boathouse"}
    assert china_top & buildings, china_top
    assert flower_top & {"daisy", "bee", "pot", "vase", "hip"}, flower_top
    # pretrained features differ from a random init
    rand = build_backbone("efficientnet_lite0", pretrained=False)
    assert not torch.allclose(rand.features(torch.from_numpy(x)), bb.features(torch.from_numpy(x)))


def test_local_checkpoint_is_loaded_and_hashed(tmp_path: Path) -> None:
    torch.manual_seed(1)
    src = build_backbone("efficientnet_lite0", pretrained=False, input_size=SIZE)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"state_dict": src.model.state_dict()}, ckpt)
    bb = build_backbone("efficientnet_lite0", weights=ckpt, input_size=SIZE)
    from pipeline.provenance import sha256_file

    assert bb.weights_sha256 == sha256_file(ckpt)
    x = torch.randn(2, 3, SIZE, SIZE)
    assert torch.equal(bb.features(x), src.features(x))


def test_bad_local_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailable, match="is not a file"):
        build_backbone("alexnet", weights=tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailable, match="not a readable torch state dict"):
        build_backbone("alexnet", weights=junk)
    wrong = tmp_path / "wrong.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(WeightsUnavailable, match="does not fit backbone resnet50"):
        build_backbone("resnet50", weights=wrong)


def test_download_only_backbone_offline_names_the_fix(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailable, match=r"network.weights: /path/to/alexnet-owt"):
        build_backbone("alexnet", input_size=SIZE)


def test_download_only_backbone_uses_the_hub_cache(tmp_path: Path, monkeypatch) -> None:
    from torchvision.models import AlexNet_Weights, alexnet

    hub = tmp_path / "hub"
    cached = hub / "checkpoints" / Path(AlexNet_Weights.IMAGENET1K_V1.url).name
    cached.parent.mkdir(parents=True)
    torch.manual_seed(2)
    ref = alexnet(weights=None).eval()
    torch.save(ref.state_dict(), cached)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    bb = build_backbone("alexnet", input_size=SIZE)
    assert bb.weights_path == str(cached)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = ref.classifier[:6](torch.flatten(ref.avgpool(ref.features(x)), 1))
    # the built backbone runs channels-last (float rounding only, relative to the scale)
    assert_close_rel(bb.features(x), expected)
