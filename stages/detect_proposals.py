"""DVC stage `detect_proposals`: Fast R-CNN's RoIs with `proposals.detect_method` on the
detector's train and test splits (independent of the `proposal` switch)."""

from pipeline.params import Params
from pipeline.proposals.stage import run_detect_proposals
from pipeline.runner import stage_main, stage_provenance


def run(p: Params) -> dict:
    splits = [p.data.eval_train_split, p.data.eval_test_split]
    return run_detect_proposals(
        p.dataset_ref,
        p.proposals,
        splits,
        p.paths.detect_proposals_dir,
        p.paths.yolo_dir,
        stage_provenance(p, "detect_proposals"),
    )


if __name__ == "__main__":
    stage_main("detect_proposals", run)
