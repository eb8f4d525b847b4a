"""Experiment runners, report writers and generated configurations (not benchmarks).

Run from the repository root as modules (``python -m experiments.<name>``):
``results`` (one DVC experiment per proposal mechanism, RESULTS.md), ``ablations``
(named DVC experiments, ABLATIONS.md), ``stage_table`` (per-stage wall time and peak
memory from ``metrics/``), ``paper_params`` (the paper's VOC configurations,
``params/paper_*.yaml``).
"""
