"""DVC stage `synthetic`: the paper's synthetic check (Figures 3 and 4)."""

from pipeline.params import Params
from pipeline.runner import stage_main
from pipeline.synthetic.experiment import run_synthetic


def run(p: Params) -> dict:
    return run_synthetic(p.synthetic, p.paths.synthetic, p.paths.plot_file("synthetic.csv"))


if __name__ == "__main__":
    stage_main("synthetic", run)
