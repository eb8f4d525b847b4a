"""DVC stage `yolo`: train the YOLO proposal detector when `proposal` or
`proposals.detect_method` needs it, else write a marker only."""

from pipeline.params import Params
from pipeline.proposals.yolo import run_yolo
from pipeline.runner import stage_main, stage_provenance


def run(p: Params) -> dict:
    return run_yolo(
        p.dataset_ref,
        p.proposal,
        p.proposals,
        p.data.scn_split,
        p.paths.yolo_dir,
        stage_provenance(p, "yolo"),
    )


if __name__ == "__main__":
    stage_main("yolo", run)
