"""DVC stage `train`: the bottom stream and context module against the cached targets."""

from pipeline.params import Params
from pipeline.runner import stage_main
from pipeline.train.loop import stage


def run(p: Params) -> dict:
    return stage(p)


if __name__ == "__main__":
    stage_main("train", run)
