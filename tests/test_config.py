from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError, build, load_params, to_dict
from pipeline.params import Params

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
