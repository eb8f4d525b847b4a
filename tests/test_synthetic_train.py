"""SCN training on synthetic pairs: exact de-duplication, and the offset beats the ablation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from pipeline.backbones import build_backbone
from pipeline.synthetic.config import SyntheticConfig
from pipeline.synthetic.generate import generate
from pipeline.synthetic.train import DedupHead, TrainSettings, encode, train_scn, unique_rows
from tests.helpers.numeric import assert_close_rel

TINY = SyntheticConfig(
    n_square=60, n_triangle=60, n_black=40, n_test=40, canvas_size=160, min_size=20,
    max_size=36, axis_tolerance=20, input_size=64, pixel_size=8, epochs=30,
    recon_epochs=(1, 30),
)  # fmt: skip


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: far faster on one thread on a shared CPU
    yield
    torch.set_num_threads(threads)


def test_dedup_head_is_exact_in_value_and_gradient():
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh())
    base = torch.randn(3, 5)
    ids = torch.tensor([0, 2, 1, 0, 2, 2])
    x = base[ids]  # (6, 5) with repeated rows
    w = torch.randn(6, 7)
    (head(x) * w).sum().backward()
    expected = [p.grad.clone() for p in head.parameters()]
    head.zero_grad()
    out = DedupHead(head)(x, ids)  # (6, 7)
    (out * w).sum().backward()
    # the same values up to float32 rounding (other batch sizes and summation orders)
    assert_close_rel(out, head(x), rel=1e-5)
    for p, g in zip(head.parameters(), expected, strict=True):
        assert_close_rel(p.grad, g, rel=1e-5)
    first, inv = unique_rows(x)
    assert len(first) == 3 and (x[first][inv] == x).all()


@pytest.mark.slow
def test_offset_model_beats_the_ablation(one_thread):
    torch.manual_seed(0)
    pairs, _ = generate(TINY)
    train, test = pairs.subset(0), pairs.subset(1)
    bb = build_backbone("efficientnet_lite0", input_size=TINY.input_size)
    trunk, head = bb.split("fc")
    enc = {k: encode(trunk, getattr(s, f), bb.mean, bb.std)
           for k, s, f in (("trb", train, "bottom"), ("trt", train, "top"),
                           ("teb", test, "bottom"), ("tet", test, "top"))}  # fmt: skip
    with torch.no_grad():
        y_tr, y_te = head(enc["trt"]), head(enc["tet"])  # (N, 1280)
    tr = (enc["trb"], torch.from_numpy(train.offset), y_tr)
    te = (enc["teb"], torch.from_numpy(test.offset), y_te)
    s = TrainSettings(epochs=TINY.epochs, batch_size=16, lr=1e-3, optimizer="adam", hidden=64)
    before = [p.clone() for p in head.parameters()]
    with_off = train_scn("offset", head, tr, te, s, use_offset=True)
    without = train_scn("no_offset", head, tr, te, s, use_offset=False)
    again = train_scn("offset", head, tr, te, s, use_offset=True)
    assert with_off.test_mse == again.test_mse  # deterministic for a seed
    for p, b in zip(
        head.parameters(), before, strict=True
    ):  # runs train copies, not the given head
        assert torch.equal(p, b)
    assert np.isfinite(with_off.test_mse).all() and len(with_off.test_mse) == TINY.epochs
    assert with_off.test_mse[-1] < with_off.test_mse[0]
    assert with_off.test_mse[-1] < 0.6 * without.test_mse[-1]


def test_config_defaults_match_params_yaml():
    from pipeline.params import load_params

    assert load_params("params.yaml").synthetic == replace(SyntheticConfig())
