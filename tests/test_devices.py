import pytest
import torch

from pipeline.config import ConfigError
from pipeline.devices import resolve_device


def test_auto_and_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_missing_gpu_is_a_clear_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"train.device: 'cuda:1' but no GPU is visible"):
        resolve_device("cuda:1", "train.device")


def test_unknown_device_name():
    with pytest.raises(ConfigError, match=r"targets.device: 'tpu' is not a device"):
        resolve_device("tpu", "targets.device")
