"""Train-mode behaviour of the bottom stream: frozen BatchNorm, no dropout, h1 = W_T at step 0;
the predict-the-mean baseline and the diagnostics logged per epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.backbones import build_backbone
from pipeline.models.context import scn_loss
from pipeline.train.methods.scn import fit, target_variance
from pipeline.train.model import SCN, build_scn
from tests.helpers.numeric import assert_close_rel, rel_diff
from tests.helpers.toy_train import TARGET_DIM, TRUNK_DIM, toy_config, toy_sets

SIZE = 64
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def backbone():
    return build_backbone("efficientnet_lite0", pretrained=True, input_size=SIZE)  # offline


def _batch_norms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("scope", ["fc", "fc+conv5"])
def test_h1_at_step_zero_is_the_original_feature_in_train_mode(backbone, scope):
    """W_B = W_T: before any step the bottom stream in train mode computes exactly what the
    top stream computed for the targets (eval mode), so BN statistics and drop-connect
    must not act. With batch statistics it does not (the bug this guards against)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, SIZE, SIZE, generator=g)  # (8, 3, S, S)
    original = backbone.features(images)  # (8, D) the top stream, eval mode
    model = build_scn(backbone, scope, backbone.feature_dim, hidden=8)
    model.train()
    assert model.context.training and not model.trunk.training
    assert all(not m.training for m in _batch_norms(model.head))
    with torch.no_grad():
        h1 = model.bottom(model.trunk(images), from_trunk=True)  # (8, D)
    assert torch.equal(h1, original)
    batch_stats = build_scn(backbone, scope, backbone.feature_dim, hidden=8, bn="batch").train()
    assert all(m.training for m in _batch_norms(batch_stats.head))
    with torch.no_grad():
        h1_batch = batch_stats.bottom(batch_stats.trunk(images), from_trunk=True)  # (8, D)
    assert rel_diff(h1_batch, original) > 1e-2  # batch statistics: other features


def test_frozen_bn_keeps_running_statistics_and_trains_affine(backbone):
    torch.manual_seed(0)
    model = build_scn(backbone, "fc", backbone.feature_dim, hidden=8).train()
    bns = _batch_norms(model.head)
    stats = [(m.running_mean.clone(), m.running_var.clone(), m.weight.clone()) for m in bns]
    opt = torch.optim.SGD(model.trainable(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    x = model.trunk(torch.randn(4, 3, SIZE, SIZE, generator=g))  # (4, C, h, w)
    target = torch.randn(4, backbone.feature_dim, generator=g)  # (4, D)
    loss = scn_loss(model(x, torch.zeros(4, 8), from_trunk=True), target)
    opt.zero_grad()
    loss.backward()
    opt.step()
    for m, (mean, var, _) in zip(bns, stats, strict=True):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
        assert int(m.num_batches_tracked) == 0
        assert m.weight.grad is not None and m.bias.grad is not None
    # the affine parameters do train
    assert any(not torch.equal(m.weight, s[2]) for m, s in zip(bns, stats, strict=True))


@pytest.mark.parametrize("dropout", [False, True])
def test_dropout_in_the_head_only_when_asked(dropout):
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(TRUNK_DIM, TRUNK_DIM))
    head = nn.Sequential(nn.Linear(TRUNK_DIM, 64), nn.Dropout(0.5))
    model = SCN(trunk, head, 64, TARGET_DIM, hidden=4, dropout=dropout).train()
    x = torch.randn(16, TRUNK_DIM)  # (16, TRUNK_DIM)
    with torch.no_grad():
        train_h1 = model.bottom(x, from_trunk=True)  # (16, 64)
        eval_h1 = model.eval().bottom(x, from_trunk=True)  # (16, 64)
    assert torch.equal(train_h1, eval_h1) != dropout


def test_target_variance_is_the_predict_the_mean_loss(tmp_path):
    _, test = toy_sets(tmp_path, n_train=6, n_test=3)
    t = test[np.arange(len(test))]["target"].double().numpy()  # (M, D)
    var, mean = target_variance(test)
    assert var == pytest.approx(((t - t.mean(0)) ** 2).sum(1).mean(), rel=1e-6)
    assert_close_rel(mean, t.mean(0), rel=1e-6)
    c = np.ones(t.shape[1])
    assert target_variance(test, c)[0] == pytest.approx(((t - c) ** 2).sum(1).mean(), rel=1e-6)


def test_history_reports_variance_explained_and_h3_spread(tmp_path):
    train, test = toy_sets(tmp_path)
    result = fit(SCN_toy(), train, test, toy_config(epochs=6, lr_step_epoch=5))
    var = result.extra["test_target_variance"]
    first, last = result.history[0], result.history[-1]
    for rec in result.history:
        assert rec["test_explained"] == pytest.approx(1 - rec["test_loss"] / var)
    assert last["test_explained"] > 0.5 > first["test_explained"]  # the toy is learnable
    assert last["h3_spread"] > 0.5  # h3 varies with the offset, not only the mean


def test_context_module_gets_its_own_learning_rate(tmp_path):
    train, test = toy_sets(tmp_path, n_train=4, n_test=2)
    model = SCN_toy()
    head0 = [p.detach().clone() for p in model.head.parameters()]
    fit(model, train, test, toy_config(epochs=1, lr=1e-12, context_lr_mult=1e9))
    # the head barely moves (lr 1e-12), the context module moves at lr 1e-3
    pairs = zip(model.head.parameters(), head0, strict=True)
    assert all(torch.allclose(p, q, atol=1e-9) for p, q in pairs)
    ctx0 = SCN_toy().context.state_dict()
    assert any(not torch.equal(v, ctx0[k]) for k, v in model.context.state_dict().items())


def SCN_toy() -> SCN:
    from tests.helpers.toy_train import toy_model

    return toy_model()


def test_output_bias_mean_starts_at_the_predict_the_mean_baseline(tmp_path):
    train, test = toy_sets(tmp_path)
    mean = torch.as_tensor(target_variance(train)[1], dtype=torch.float32)  # (D,)
    for bias in ("zero", "mean"):
        cfg = toy_config(epochs=1, lr=1e-12, output_bias=bias)
        b2 = fit(SCN_toy(), train, test, cfg).model.context.v2.bias.detach()  # (D,)
        assert torch.allclose(b2, mean, atol=1e-6) == (bias == "mean")


def test_warmup_takes_smaller_first_steps(tmp_path):
    train, test = toy_sets(tmp_path)
    start = [p.detach().clone() for p in SCN_toy().parameters()]
    moved = {}
    for warmup in (0, 3):
        model = fit(SCN_toy(), train, test, toy_config(epochs=1, warmup_epochs=warmup)).model
        pairs = zip(model.parameters(), start, strict=True)
        moved[warmup] = sum(float((p - q).detach().norm()) for p, q in pairs)
    assert 0 < moved[3] < 0.7 * moved[0]
