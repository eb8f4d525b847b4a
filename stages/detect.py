"""DVC stage `detect`: Fast R-CNN on the original network and the trained bottom stream."""

from pipeline.evaluate.detect import run_detect
from pipeline.params import Params
from pipeline.runner import stage_main, stage_provenance


def run(p: Params) -> dict:
    splits = (p.data.eval_train_split, p.data.eval_test_split)
    return run_detect(
        p.dataset_ref,
        p.backbone,
        p.network,
        p.detect,
        splits,
        p.paths,
        stage_provenance(p, "detect"),
    )


if __name__ == "__main__":
    stage_main("detect", run)
