"""DVC stage `detect`: Fast R-CNN on the trained bottom stream, against the original
backbone's results of `detect_original`."""

from pipeline.evaluate.detect.stage import run_detect
from pipeline.params import Params
from pipeline.runner import stage_main, stage_provenance


def run(p: Params) -> dict:
    splits = (p.data.eval_train_split, p.data.eval_test_split)
    return run_detect(
        p.dataset_ref,
        p.backbone,
        p.detect,
        splits,
        p.paths,
        stage_provenance(p, "detect"),
        stage_provenance(p, "detect_original"),
    )


if __name__ == "__main__":
    stage_main("detect", run)
