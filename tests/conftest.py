"""Shared fixtures: a tiny VOC-layout dataset (tests/helpers/voc.py), one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.voc import write_tiny_voc


@pytest.fixture
def tiny_voc(tmp_path: Path) -> Path:
    """A tiny VOC-layout dataset at ``tmp_path/scenes``; returns ``VOCdevkit/SCENES``."""
    return write_tiny_voc(tmp_path / "scenes")


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine more threads only spin and wait.

    The train tests use it for every test: ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
