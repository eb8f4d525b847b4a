"""tools.other_cpu: the libraries really pick the other CPU's kernels in a child process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tools.other_cpu import PROFILES, environment, main

_PROBE = """
import json, cv2, numpy, threadpoolctl, torch
from numpy._core._multiarray_umath import __cpu_features__ as np_cpu
blas = [i.get("architecture") for i in threadpoolctl.threadpool_info()
        if i["internal_api"] == "openblas"]
print(json.dumps({"torch": torch.backends.cpu.get_cpu_capability(), "openblas": blas,
                  "cv_avx512": cv2.checkHardwareSupport(13),
                  "cv_avx2": cv2.checkHardwareSupport(11),
                  "np_avx512": np_cpu.get("AVX512F"), "np_avx2": np_cpu.get("AVX2")}))
"""


def _probe(env: dict[str, str] | None) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def native() -> dict:
    return _probe(None)


def test_avx2_profile_switches_every_library_to_avx2_kernels(native) -> None:
    if native["torch"] not in ("AVX2", "AVX512"):
        pytest.skip(f"this CPU runs torch's {native['torch']} kernels, below AVX2")
    got = _probe(environment("avx2"))
    assert got["torch"] == "AVX2"
    assert got["openblas"] == ["Haswell"] * len(native["openblas"])
    assert not got["cv_avx512"] and got["cv_avx2"] == native["cv_avx2"]
    assert not got["np_avx512"] and got["np_avx2"] == native["np_avx2"]


def test_default_profile_switches_off_every_vector_extension_beyond_sse4(native) -> None:
    got = _probe(environment("default"))
    assert got["torch"] == "DEFAULT"
    assert got["openblas"] == ["Nehalem"] * len(native["openblas"])
    assert not got["cv_avx2"] and not got["cv_avx512"]
    assert not got["np_avx2"] and not got["np_avx512"]


def test_unknown_profile_and_missing_command_are_named(capsys) -> None:
    with pytest.raises(ValueError, match=r"'avx512'.*allowed: avx2, default"):
        environment("avx512")
    with pytest.raises(SystemExit):
        main(["avx2"])
    assert "no command given" in capsys.readouterr().err
    assert PROFILES == ("avx2", "default")


def test_main_runs_the_command_in_that_environment_and_returns_its_status() -> None:
    code = "import os, sys; sys.exit(0 if os.environ['ATEN_CPU_CAPABILITY'] == 'default' else 3)"
    assert main(["default", "--", sys.executable, "-c", code]) == 0
    assert main(["avx2", "--", sys.executable, "-c", code]) == 3


def test_make_test_other_cpu_runs_the_suite_under_the_named_profile() -> None:
    """`make test-other-cpu OTHER_CPU=...` (README) runs pytest through tools.other_cpu."""
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    for profile, extra in (("avx2", []), ("default", ["OTHER_CPU=default"])):
        cmd = ["make", "-n", "--no-print-directory", "test-other-cpu", f"VENV={sys.prefix}", *extra]
        out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=True, env=env)
        (line,) = [x for x in out.stdout.splitlines() if "-m tools.other_cpu" in x]
        assert line.endswith(f"-m tools.other_cpu {profile} -- {sys.prefix}/bin/python -m pytest")
