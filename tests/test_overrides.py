"""tools.overrides: -S values read as DVC reads them, one parser for every tool."""

from __future__ import annotations

import re

import pytest

from experiments.results import matches
from tools.overrides import apply, holds, lookup, parse_value


def test_values_parse_as_yaml_1_2_numbers():
    # PyYAML alone reads 1e-5 as the string "1e-5"; DVC (YAML 1.2) as a number
    assert parse_value("1e-5") == 1e-5 and parse_value("1.0e-05") == 1e-5
    assert parse_value("3") == 3 and parse_value("true") is True and parse_value("null") is None
    assert parse_value("shuffled") == "shuffled" and parse_value("[1, 2]") == [1, 2]
    assert parse_value("inf") == float("inf")  # as float() reads it


def test_strict_refuses_what_params_yaml_lacks_and_lenient_creates_it():
    data = {"train": {"lr": 1.0e-05, "seed": 0}, "proposal": "edgebox"}
    out = apply(data, ["train.lr=1e-4", "proposal=bbox"])
    assert out == {"train": {"lr": 1e-4, "seed": 0}, "proposal": "bbox"}
    assert data["train"]["lr"] == 1.0e-05  # the input is left alone
    with pytest.raises(SystemExit, match=re.escape("'train.lrr' is not a key of params.yaml")):
        apply(data, ["train.lrr=1"])
    with pytest.raises(SystemExit, match=re.escape("'pairs' is not a section of params.yaml")):
        apply(data, ["pairs.max_iou=0.2"])
    with pytest.raises(SystemExit, match="expected key=value"):
        apply(data, ["train.lr"])
    lenient = apply(data, ["pairs.max_iou=0.2", "train.x.y=2"], strict=False)
    assert lenient["pairs"] == {"max_iou": 0.2} and lenient["train"]["x"] == {"y": 2}
    assert lookup(lenient, "train.x.y") == 2 and lookup(lenient, "train.z") is None


def test_an_experiment_holds_an_override_written_either_way():
    params = {"train": {"lr": 1.0e-05, "pairs": "shuffled", "seed": 2}}
    for written in ("train.lr=1e-5", "train.lr=1.0e-05", "train.lr=0.00001"):
        assert holds(params, [written, "train.pairs=shuffled", "train.seed=2"])
        assert matches(params, [written])  # results --reuse keeps it
    assert not holds(params, ["train.lr=1e-4"]) and not holds(params, ["train.seed=1"])
    assert not holds(params, ["train.hidden=8"])
