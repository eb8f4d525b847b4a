"""Run a command with another x86-64 CPU's kernels: ``python -m tools.other_cpu avx2 -- CMD``.

A float tolerance in a test can hold on the CPU it was written on and fail on another one
whose SIMD kernels sum in another order (this happened: ``make test`` on a fresh clone
failed on an AVX-512 machine). Every numerical library here picks its kernels at run time
from the CPU's instruction sets, and each can be told to pick those of an older CPU through
an environment variable, which child processes (DVC's stages) inherit:

===========  =====================================  ==============================
library      variable                               ``avx2`` / ``default``
===========  =====================================  ==============================
torch        ``ATEN_CPU_CAPABILITY``                ``avx2`` / ``default``
MKL          ``MKL_ENABLE_INSTRUCTIONS``            ``AVX2`` / ``SSE4_2``
oneDNN       ``ONEDNN_MAX_CPU_ISA``                 ``AVX2`` / ``SSE41``
OpenBLAS     ``OPENBLAS_CORETYPE``                  ``Haswell`` / ``Nehalem``
numpy        ``NPY_DISABLE_CPU_FEATURES``           its AVX-512 / AVX and FMA kernels
OpenCV       ``OPENCV_CPU_DISABLE``                 its AVX-512 / also AVX2, FMA3, AVX
===========  =====================================  ==============================

``avx2`` is a Haswell-or-later machine without AVX-512 (most laptops and many cloud
CPUs); ``default`` a CPU with none of the vector extensions beyond SSE4. ``make
test-other-cpu`` (``OTHER_CPU=avx2`` unless set) runs the whole suite this way; it does
not make a CPU faster or slower than it can be, only picks other kernels, so a run on
an AVX-512 machine tests what an AVX2 machine computes (up to cache-size dependent
blocking, which the libraries also choose per machine).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

PROFILES = ("avx2", "default")

# OpenCV's names (getCPUFeaturesLine); an unknown one is only warned about and ignored
_CV_AVX512 = "AVX512F,AVX512-SKX,AVX512-COMMON"

_FIXED = {
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "OPENBLAS_CORETYPE": "Haswell",
        "OPENCV_CPU_DISABLE": _CV_AVX512,
    },
    "default": {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "OPENBLAS_CORETYPE": "Nehalem",
        "OPENCV_CPU_DISABLE": f"{_CV_AVX512},AVX2,FMA3,AVX,FP16",
    },
}


def numpy_features(profile: str) -> list[str]:
    """numpy's dispatched kernels this CPU has and ``profile``'s CPU would not: the AVX-512
    ones for ``avx2``, every AVX/FMA one for ``default``. numpy refuses to disable a
    feature its build requires or the CPU lacks, so only those dispatched and present."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    prefixes = ("AVX512",) if profile == "avx2" else ("AVX", "FMA", "F16C")
    return [f for f in __cpu_dispatch__ if __cpu_features__.get(f) and f.startswith(prefixes)]


def environment(profile: str) -> dict[str, str]:
    """This process's environment with ``profile``'s kernel choices."""
    if profile not in PROFILES:
        raise ValueError(f"unknown CPU profile {profile!r}; allowed: {', '.join(PROFILES)}")
    env = dict(os.environ)
    env.update(_FIXED[profile])
    features = numpy_features(profile)
    if features:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(features)
    else:
        env.pop("NPY_DISABLE_CPU_FEATURES", None)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], usage="%(prog)s {avx2,default} -- COMMAND ..."
    )
    parser.add_argument("profile", choices=PROFILES, help="the CPU whose kernels to use")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (e.g. -- python -m pytest)")
    env = environment(args.profile)
    names = (*_FIXED[args.profile], "NPY_DISABLE_CPU_FEATURES")
    shown = " ".join(f"{k}={env[k]!r}" for k in names if k in env)
    print(f"CPU kernels of profile {args.profile}: {shown}", file=sys.stderr, flush=True)
    return subprocess.run(command, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
