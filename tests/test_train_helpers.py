"""Self-checks of the toy train data in tests/helpers/toy_train.py."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.toy_train import TARGET_DIM, TRUNK_DIM, toy_sets

pytestmark = pytest.mark.usefixtures("one_thread")


def test_toy_split_follows_the_pairs_contract(tmp_path):
    train, test = toy_sets(tmp_path, n_train=3, n_test=2)
    assert len(train) == 12 and len(test) == 8
    batch = train[[0, 5, 11]]
    assert batch["x"].shape == (3, TRUNK_DIM)
    assert batch["offset"].shape == (3, 8)
    assert batch["target"].shape == (3, TARGET_DIM)
    # pairs 0 and 4 go left in images 0 and 1: same target row value, different bottoms
    b = train[[0, 4]]
    assert torch.equal(b["target"][0], b["target"][1])
    assert not torch.equal(b["x"][0], b["x"][1])
