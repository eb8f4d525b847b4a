"""DVC stage `pairs`: (top, bottom, offset) pair manifests from the proposals."""

from pipeline.pairs.manifest import run_pairs
from pipeline.params import Params
from pipeline.runner import stage_main, stage_provenance


def run(p: Params) -> dict:
    splits = [p.data.scn_split, p.data.eval_test_split]
    return run_pairs(p.pairs, p.proposal, p.dataset, splits, p.paths, stage_provenance(p, "pairs"))


if __name__ == "__main__":
    stage_main("pairs", run)
