"""DVC stage `detect_original`: Fast R-CNN on the original backbone, independent of the
SCN side."""

from pipeline.evaluate.detect.original import run_detect_original
from pipeline.params import Params
from pipeline.runner import stage_main, stage_provenance


def run(p: Params) -> dict:
    splits = (p.data.eval_train_split, p.data.eval_test_split)
    return run_detect_original(
        p.dataset_ref,
        p.backbone,
        p.network,
        p.detect,
        splits,
        p.paths,
        stage_provenance(p, "detect_original"),
    )


if __name__ == "__main__":
    stage_main("detect_original", run)
