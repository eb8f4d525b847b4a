"""DVC stage `classify`: linear-SVM classification (Obj, Img) and the context experiment,
the trained bottom stream against the original network's results of `classify_original`."""

from pipeline.evaluate.classify.stage import run_classify
from pipeline.params import Params
from pipeline.runner import stage_main, stage_provenance


def run(p: Params) -> dict:
    splits = (p.data.eval_train_split, p.data.eval_test_split)
    return run_classify(
        p.dataset_ref,
        p.backbone,
        p.network,
        p.classify,
        p.pairs.offset_scale,
        splits,
        p.paths,
        stage_provenance(p, "classify"),
        stage_provenance(p, "classify_original"),
    )


if __name__ == "__main__":
    stage_main("classify", run)
