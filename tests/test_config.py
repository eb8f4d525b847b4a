from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError, build, to_dict
from pipeline.params import Params, load_params

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path, data):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def repo_params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_repo_params_validate():
    p = load_params(ROOT / "params.yaml")
    assert p.dataset == "scenes"
    assert to_dict(build(Params, to_dict(p))) == to_dict(p)


@pytest.mark.parametrize(
    "patch, message",
    [
        (
            {"proposal": "selective"},
            "proposal: 'selective' is not a valid choice; allowed: edgebox",
        ),
        ({"train": {"lr": -1.0}}, "train.lr: -1.0 is out of range; allowed: > 0"),
        ({"train": {"epochs": "ten"}}, "train.epochs: 'ten' is not an integer"),
        ({"train": {"lr_typo": 1}}, "train.lr_typo: unknown key; allowed:"),
        ({"colour": 1}, "colour: unknown key"),
        ({"pairs": {"min_iou": 0.6, "max_iou": 0.5}}, "pairs.min_iou: 0.6 is above"),
        ({"data": {"on_error": "ignore"}}, "data.on_error: 'ignore' is not a valid choice"),
        ({"train": {"use_offset": "yes"}}, "train.use_offset: 'yes' is not a boolean"),
        (
            {"train": {"optimizer": "rmsprop"}},
            "train.optimizer: 'rmsprop' is not a valid choice; allowed: sgd, adam, adamw",
        ),
        (
            {"train": {"loss": "l1"}},
            "train.loss: 'l1' is not a valid choice; allowed: sum, mean, element_mean",
        ),
        ({"train": {"select": "first"}}, "train.select: 'first' is not a valid choice"),
        ({"train": {"early_stop_patience": -1}}, "train.early_stop_patience: -1 is out of range"),
        ({"train": {"context_warmup_epochs": 1.5}}, "train.context_warmup_epochs: 1.5 is not"),
    ],
)
def test_bad_params_name_key_value_and_allowed(tmp_path, patch, message):
    data = repo_params()
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_params(write(tmp_path, data))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_every_choice_literal_matches_its_registry(tmp_path):
    """Each Literal of choices in the config names exactly what its registry implements."""
    from dataclasses import replace
    from typing import get_args, get_type_hints

    from pipeline.backbones import BACKBONES
    from pipeline.data.voc import dataset_dir
    from pipeline.params import DATASETS, PROPOSALS
    from pipeline.proposals.config import EdgeBoxConfig, ProposalsConfig
    from pipeline.proposals.edges import EDGE_SOURCES, make_edge_detector
    from pipeline.proposals.stage import PROPOSAL_METHODS
    from pipeline.train.config import TrainConfig
    from pipeline.train.loop import OPTIMIZERS
    from pipeline.train.model import LOADABLE_METHODS as LOADABLE
    from pipeline.train.stage import TRAIN_METHODS

    hints = get_type_hints(Params)
    # every training method has a builder, and load_trained reads what each one writes
    assert get_args(hints["method"]) == tuple(TRAIN_METHODS) == LOADABLE
    assert get_args(hints["backbone"]) == tuple(BACKBONES)
    assert set(get_args(hints["proposal"])) == set(PROPOSALS) == set(PROPOSAL_METHODS)
    assert get_args(get_type_hints(ProposalsConfig)["detect_method"]) == PROPOSALS
    assert get_args(get_type_hints(EdgeBoxConfig)["edge_source"]) == EDGE_SOURCES
    assert get_args(get_type_hints(TrainConfig)["optimizer"]) == tuple(OPTIMIZERS)
    with pytest.raises(ConfigError, match="edge_source: 'canny'"):
        make_edge_detector("canny")
    p = Params()
    data = replace(p.data, voc_root=tmp_path, voc2007_test_root=tmp_path)
    assert get_args(hints["dataset"]) == DATASETS
    for name in DATASETS:  # every dataset choice has a folder rule
        assert isinstance(dataset_dir(name, data, p.scenes, "train"), Path)
    with pytest.raises(ConfigError, match="dataset: 'coco'"):
        dataset_dir("coco", data, p.scenes, "train")


def test_one_device_rule_for_every_stage(tmp_path):
    """Every section's ``device`` accepts and refuses the same values, with one message."""
    from dataclasses import fields, is_dataclass
    from typing import get_type_hints

    def device_keys(cls, prefix):
        for f in fields(cls):
            tp = get_type_hints(cls)[f.name]
            if f.name == "device":
                yield f"{prefix}{f.name}"
            elif is_dataclass(tp):
                yield from device_keys(tp, f"{prefix}{f.name}.")

    keys = sorted(device_keys(Params, ""))
    assert keys == [
        "classify.device",
        "detect.device",
        "diagnose.device",
        "proposals.yolo.device",
        "targets.device",
        "train.device",
    ]
    for key in keys:
        for value in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
            load_params(write(tmp_path, with_key(repo_params(), key, value)))
        for bad in ("cudafoo", "gpu", "0", "cuda:", "CPU"):
            message = rf"{key}: '{bad}' is not valid; allowed: auto, cpu, cuda, cuda:N"
            with pytest.raises(ConfigError, match=message):
                load_params(write(tmp_path, with_key(repo_params(), key, bad)))


def with_key(data: dict, dotted: str, value) -> dict:
    """``data`` with the nested key ``a.b.c`` set to ``value`` (in place; returned)."""
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data
