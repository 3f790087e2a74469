# Thin wrappers; every target installs what it needs first, so each works as the first command typed.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3
export NO_ALBUMENTATIONS_UPDATE := 1
export STN_FACE_DATA ?= $(abspath ../shared/data)
ARGS ?=

LATEST_VENV ?= .venv-latest
# An environment made by `make install` holds exactly constraints.txt (tests/test_packaging.py checks it).
export STN_FACE_LOCKED_ENV ?= $(abspath $(VENV))

.PHONY: install train smoke test test-fast test-latest lock lint bench gpu-check sweep report data clean

$(STAMP): pyproject.toml setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: a range would pull a multi-GB CUDA build on CPU-only machines
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	# the tested versions of everything else (constraints.txt), then what none of them pins away
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,slurm]'
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP)

test-latest:  ## the fast tests on the newest versions pyproject.toml allows, in $(LATEST_VENV) (what the scheduled CI job runs)
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev,slurm]'
	$(LATEST_VENV)/bin/python -m pip check
	@echo "versions that differ from constraints.txt (locked -> newest):"
	@$(LATEST_VENV)/bin/python -m pip freeze --all --exclude-editable | grep -v '^pip==' | sed 's/+cpu$$//' | sort -f > $(LATEST_VENV)/freeze.txt
	@grep -v '^#' constraints.txt | sort -f | diff - $(LATEST_VENV)/freeze.txt | grep '^[<>]' || echo "  none"
	STN_FACE_LOCKED_ENV= $(LATEST_VENV)/bin/python -m pytest -q -m "not slow" $(ARGS)

lock:  ## rewrite constraints.txt from $(LATEST_VENV) (after make test-latest and the whole suite pass there)
	@test -f $(LATEST_VENV)/freeze.txt || { echo "error: run make test-latest first"; exit 2; }
	{ grep '^#' constraints.txt; cat $(LATEST_VENV)/freeze.txt; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

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
	rm -rf $(VENV) $(LATEST_VENV) .pytest_cache .ruff_cache
