"""DVC stage `targets`: the frozen top stream's features (and trunk cache) per patch."""

from pipeline.params import Params
from pipeline.runner import stage_main, stage_provenance
from pipeline.targets.cache import run_targets


def run(p: Params) -> dict:
    splits = [p.data.scn_split, p.data.eval_test_split]
    return run_targets(
        p.dataset_ref,
        p.backbone,
        p.network,
        p.targets,
        splits,
        p.paths,
        stage_provenance(p, "targets"),
    )


if __name__ == "__main__":
    stage_main("targets", run)
