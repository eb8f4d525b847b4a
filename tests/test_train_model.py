"""The SCN model on a real backbone: gradients, frozen parts, save/load roundtrip."""

from __future__ import annotations

import pytest
import torch

from pipeline.backbones import build_backbone
from pipeline.errors import DataError
from pipeline.models.context import assert_frozen, scn_loss
from pipeline.train.model import build_scn, load_trained, save_trained
from tests.helpers.numeric import assert_close_rel, rel_diff

SIZE = 64
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def backbone():
    return build_backbone("efficientnet_lite0", pretrained=False, input_size=SIZE)


def _step_inputs(bb, scope, model, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, SIZE, SIZE, generator=g)  # (n, 3, S, S)
    offset = torch.rand(n, 8, generator=g) * 2 - 1  # (n, 8)
    target = bb.features(torch.randn(n, 3, SIZE, SIZE, generator=g))  # (n, D) frozen top
    x = images if scope == "all" else model.trunk(images)
    return images, x, offset, target


@pytest.mark.parametrize("scope", ["fc", "all"])
def test_every_trainable_parameter_gets_a_gradient_frozen_ones_none(backbone, scope):
    torch.manual_seed(0)
    model = build_scn(backbone, scope, backbone.feature_dim, hidden=32)
    top_before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    _, x, offset, target = _step_inputs(backbone, scope, model)
    model.train()
    h3 = model(x, offset, from_trunk=scope != "all")  # (n, D)
    scn_loss(h3, target).backward()
    trainable = dict(model.named_parameters())
    assert any(n.startswith("head.") for n in trainable)
    for name, p in trainable.items():
        if name.startswith("trunk."):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.requires_grad, name
            assert p.grad is not None, f"{name} received no gradient"
            assert torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"
    if scope == "fc":
        assert sum(1 for n in trainable if n.startswith("trunk.")) > 0
    # the top stream is a separate, frozen network: untouched by the bottom's backward
    assert_frozen(backbone.model)
    assert all(p.grad is None for p in backbone.model.parameters())
    for k, v in backbone.model.state_dict().items():
        assert torch.equal(v, top_before[k]), k
    model.check_frozen()


def test_offset_ablation_has_no_vloc(backbone):
    model = build_scn(backbone, "fc", 10, hidden=8, use_offset=False)
    assert model.context.vloc is None
    assert not any("vloc" in n for n, _ in model.named_parameters())


def _train_a_little(bb, scope, model, steps=3):
    opt = torch.optim.SGD(model.trainable(), lr=0.01, momentum=0.9)
    for s in range(steps):
        _, x, offset, target = _step_inputs(bb, scope, model, seed=s)
        model.train()
        loss = scn_loss(model(x, offset, from_trunk=scope != "all"), target)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("scope", ["fc", "fc+conv5"])
def test_load_trained_roundtrip(tmp_path, scope):
    torch.manual_seed(0)
    bb = build_backbone("efficientnet_lite0", pretrained=False, input_size=SIZE)
    model = build_scn(bb, scope, target_dim=bb.feature_dim, hidden=16)
    original_head = {k: v.clone() for k, v in model.head.state_dict().items()}
    _train_a_little(bb, scope, model)
    assert any(not torch.equal(v, original_head[k]) for k, v in model.head.state_dict().items())
    path = tmp_path / "model.pt"
    save_trained(path, model, bb, scope, {"train": {"hidden": 16}}, {"backbone": bb.name})
    loaded = load_trained(path)

    model.eval()
    images, _, offset, _ = _step_inputs(bb, scope, model, seed=11)
    with torch.no_grad():
        h1 = model.bottom(images, from_trunk=False)  # (n, D)
        h3 = model.context(h1, offset)  # (n, D)
    assert_close_rel(loaded.features(images), h1)
    assert_close_rel(loaded.context(h1, offset), h3)
    # the Backbone view carries the trained weights too
    assert_close_rel(loaded.backbone.features(images), h1)
    fresh = build_backbone("efficientnet_lite0", pretrained=False, input_size=SIZE)
    assert rel_diff(fresh.features(images), h1) > 1e-2
    body, stride, _, _ = loaded.backbone.detection_parts()
    assert stride == 16 and body(images).shape[1] == 112
    assert loaded.config["scope"] == scope and loaded.config["train"]["hidden"] == 16
    assert loaded.config["provenance"]["backbone"] == "efficientnet_lite0"
    assert loaded.input_size == SIZE and loaded.mean == (0.5, 0.5, 0.5)
    assert loaded.backbone.weights_sha256 and loaded.backbone.weights_path == str(path)
    assert all(not p.requires_grad for p in loaded.head.parameters())
    # the file is plain: safe to load without unpickling code
    torch.load(path, weights_only=True)


def test_load_trained_refuses_a_foreign_file(tmp_path):
    bad = tmp_path / "model.pt"
    torch.save({"format": "something-else"}, bad)
    with pytest.raises(DataError, match="format"):
        load_trained(bad)
    with pytest.raises(DataError, match="not found"):
        load_trained(tmp_path / "missing.pt")
