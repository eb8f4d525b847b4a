"""DVC stage `scenes`: generate the embedded VOC-layout dataset under data.scenes_root."""

from pipeline.data.scenes import stage
from pipeline.params import Params
from pipeline.runner import stage_main


def run(p: Params) -> dict:
    return stage(p.scenes, p.data.scenes_root)


if __name__ == "__main__":
    stage_main("scenes", run)
