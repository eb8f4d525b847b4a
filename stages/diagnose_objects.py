"""DVC stage `diagnose_objects`: the ground-truth part of the diagnosis (original network
and supervised ceiling on the Obj SVMs, headroom, low-shot, context predictability),
which no proposal mechanism changes; stage `diagnose` reads it."""

from pipeline.diagnose.stage import run_diagnose_objects
from pipeline.params import Params
from pipeline.runner import stage_main


def run(p: Params) -> dict:
    return run_diagnose_objects(
        p.dataset_ref,
        p.backbone,
        p.network,
        p.diagnose,
        p.classify.costs,
        p.classify.cv_folds,
        p.pairs.offset_scale,
        (p.data.eval_train_split, p.data.eval_test_split),
        p.paths,
        p.classify.solver,
        p.classify.lowshot_k,
        p.classify.lowshot_samples,
        p.classify.bootstrap,
    )


if __name__ == "__main__":
    stage_main("diagnose_objects", run)
