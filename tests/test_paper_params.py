"""The paper's VOC configurations validate and plan every stage without running them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from experiments.paper_params import render
from pipeline.params import load_params
from tools.dvc_repo import dvc, make_repo

ROOT = Path(__file__).resolve().parent.parent
FILES = ("paper_voc2012.yaml", "paper_voc2007.yaml")


@pytest.mark.parametrize("name", FILES)
def test_paper_params_validate_with_the_papers_settings(name):
    p = load_params(ROOT / "params" / name)
    assert p.backbone == "vgg19" and p.network.input_size == 224 and p.network.scope == "fc"
    assert (p.train.epochs, p.train.batch_size, p.train.lr) == (200, 64, 1e-3)
    assert (p.train.lr_step_epoch, p.train.lr_gamma, p.train.weight_decay) == (100, 0.1, 5e-4)
    assert p.proposals.edgebox.min_score == 0.1
    assert p.detect.iterations == 40000 and p.detect.lr_step == 30000
    assert p.dataset == ("voc2012" if "2012" in name else "voc2007")


@pytest.mark.parametrize("name", FILES)
def test_paper_params_files_are_up_to_date(name):
    expected = render(name)
    assert (ROOT / "params" / name).read_text() == expected, (
        "params/ is stale: run python -m experiments.paper_params"
    )


@pytest.mark.slow
def test_paper_config_plans_every_stage(tmp_path):
    params = yaml.safe_load((ROOT / "params" / "paper_voc2012.yaml").read_text())
    repo = make_repo(tmp_path, params)
    plan = dvc(repo, "status")  # resolves every stage with these params, runs nothing
    assert plan.returncode == 0, plan.stderr[-2000:]
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in stages:
        assert f"{name}:" in plan.stdout, name
    assert "data/proposals/val.h5" in plan.stdout  # outputs follow the VOC2012 splits
    assert dvc(repo, "dag").returncode == 0
    assert not (repo / "data").exists()  # planned, nothing ran
