# Thin wrappers; every target installs what it needs first, so each works as the first command typed.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3
export NO_ALBUMENTATIONS_UPDATE := 1
export STN_FACE_DATA ?= $(abspath ../shared/data)
ARGS ?=

.PHONY: install train smoke test test-fast lint bench gpu-check sweep report data clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: a range would pull a multi-GB CUDA build on CPU-only machines
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,slurm]'
	touch $(STAMP)

install: $(STAMP)

train: install  ## the main job: prepare LFW View 1 (cached) and train the small model on the CPU
	$(VENV)/bin/stn-face-train $(ARGS)

smoke: install  ## a 1-2 minute end-to-end run on a tiny real subset
	$(VENV)/bin/stn-face-train experiment=smoke $(ARGS)

test: install  ## the whole test suite (real data through STN_FACE_DATA)
	$(PY) -m pytest -q $(ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(ARGS)

lint: install
	$(VENV)/bin/ruff check stn_face tests benchmarks experiments

bench: install  ## CPU benchmark suite (benchmarks/cpu.py), writes logs/bench/<date>-<host>.json
	$(VENV)/bin/stn-face-bench $(ARGS)

gpu-check: install  ## one GPU, < 8 min: the GPU path end to end (benchmarks/gpu_check.py), one JSON; ARGS=--dry-run on a CPU
	$(PY) -m benchmarks.gpu_check $(ARGS)

sweep: install  ## the four transform types on the smoke setting
	$(VENV)/bin/stn-face-train -m experiment=smoke transform=identity,similarity,affine,projective $(ARGS)

report: install  ## table + ROC figure from a multirun: make report ARGS=logs/train/multiruns/<date>
	$(VENV)/bin/stn-face-report $(ARGS)

data: install  ## download LFW (images + official pair files) with checksum verification
	$(VENV)/bin/stn-face-data $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
