"""DVC stage `diagnose`: is there room for context pretraining (supervised ceiling vs
the original network, from stage `diagnose_objects`) and is there context to learn
(predictability of classes and of the proposal pairs' top-stream targets)?"""

from pipeline.diagnose.stage import run_diagnose
from pipeline.params import Params
from pipeline.runner import stage_main


def run(p: Params) -> dict:
    return run_diagnose(
        p.dataset_ref,
        p.backbone,
        p.network,
        p.diagnose,
        (p.data.eval_train_split, p.data.eval_test_split),
        p.data.scn_split,
        p.paths,
    )


if __name__ == "__main__":
    stage_main("diagnose", run)
