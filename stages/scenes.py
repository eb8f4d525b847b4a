"""DVC stage `scenes`: generate the embedded VOC-layout dataset under data.scenes_root."""

from pipeline.data.scenes import run_scenes
from pipeline.params import Params
from pipeline.runner import stage_main


def run(p: Params) -> dict:
    return run_scenes(p.scenes, p.data.scenes_root)


if __name__ == "__main__":
    stage_main("scenes", run)
