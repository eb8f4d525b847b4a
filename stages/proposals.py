"""DVC stage `proposals`: mine SCN's patches with the `proposal` method on the SCN and
held-out test splits."""

from pipeline.params import Params
from pipeline.proposals.stage import run_proposals
from pipeline.runner import stage_main, stage_provenance


def run(p: Params) -> dict:
    splits = [p.data.scn_split, p.data.eval_test_split]
    return run_proposals(
        p.dataset_ref,
        p.proposal,
        p.proposals,
        splits,
        p.paths.proposals,
        p.paths.yolo_dir,
        stage_provenance(p, "proposals"),
        p.paths.scn_images_manifest,
    )


if __name__ == "__main__":
    stage_main("proposals", run)
