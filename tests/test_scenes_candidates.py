"""experiments.scenes_candidates: the section overrides of the measurement (no generation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.scenes_candidates import override_section
from pipeline.config import ConfigError
from pipeline.params import load_params

PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"


def test_override_section_network_and_diagnose():
    params = load_params(PARAMS)
    out = override_section(params, "network", ["scope=fc+conv5"])
    out = override_section(out, "diagnose", ["max_objects=8000", "ceiling_epochs=20"])
    assert out.network.scope == "fc+conv5"
    assert out.network.input_size == params.network.input_size  # the rest untouched
    assert (out.diagnose.max_objects, out.diagnose.ceiling_epochs) == (8000, 20)
    assert out.diagnose.seed == params.diagnose.seed
    assert params.network.scope == "fc"  # the original is not modified
    assert override_section(params, "network", []) is params


@pytest.mark.parametrize(
    "section, text, error",
    [
        ("network", "depth=3", SystemExit),  # not a key
        ("network", "scope", SystemExit),  # no value
        ("network", "scope=conv9", ConfigError),  # not an allowed scope
        ("diagnose", "max_objects=1", ConfigError),  # below its bound
    ],
)
def test_override_section_rejects(section, text, error):
    params = load_params(PARAMS)
    with pytest.raises(error):
        override_section(params, section, [text])
