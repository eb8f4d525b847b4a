"""DVC stage `train`: the method's network (SCN: bottom stream and context module against
the cached targets; doersch: the bottom stream on Doersch et al.'s relative positions)."""

from pipeline.params import Params
from pipeline.runner import stage_main
from pipeline.train.stage import run_train


def run(p: Params) -> dict:
    splits = (p.data.scn_split, p.data.eval_test_split)
    return run_train(p.dataset_ref, p.backbone, p.proposal, p.network, p.train, splits, p.paths,
                 p.method, p.doersch)  # fmt: skip


if __name__ == "__main__":
    stage_main("train", run)
