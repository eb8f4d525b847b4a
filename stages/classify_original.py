"""DVC stage `classify_original`: the original network's linear-SVM classification (Obj,
Img, low-shot), independent of the SCN side."""

from pipeline.evaluate.classify.original import run_classify_original
from pipeline.params import Params
from pipeline.runner import stage_main, stage_provenance


def run(p: Params) -> dict:
    splits = (p.data.eval_train_split, p.data.eval_test_split)
    return run_classify_original(
        p.dataset_ref,
        p.backbone,
        p.network,
        p.classify,
        splits,
        p.paths,
        stage_provenance(p, "classify_original"),
    )


if __name__ == "__main__":
    stage_main("classify_original", run)
