#!/usr/bin/env bash
# The GPU benchmark in one command, from anywhere: bench/gpu.sh [--markdown] [--out FILE] ...
# (python -m bench.gpu from the repository root; PYTHON picks the interpreter.)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
exec "$PYTHON" -m bench.gpu "$@"
