"""Tools around the pipeline that are neither stages nor benchmarks.

``tools.dvc_repo``: throwaway git + DVC repositories of this project at a tiny size (shared
by the tests and the fault-injection harness); ``tools.fault_injection``: SIGKILL each DVC
stage mid-run, rerun, compare with a clean run (``python -m tools.fault_injection``).
"""
