# vlaexp — `make help` lists the targets. Every target that runs code depends on `install`,
# so each one works on a fresh clone by itself.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2
# Headless MuJoCo rendering; wandb never needs the network unless WANDB_MODE says so.
export MUJOCO_GL ?= egl
export WANDB_MODE ?= offline

.PHONY: help install demo test test-full test-slow test-sim test-gpu lint format bench sweep clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check uv
	@# egl-probe (robomimic, via LIBERO) builds C++ with whichever `cmake` is on PATH; CMake >= 4
	@# (e.g. the cmake wheel of an activated venv) refuses its cmake_minimum_required < 3.5
	CMAKE_POLICY_VERSION_MINIMUM=3.5 $(UV) pip install -q --python $(PY) -r requirements.lock -e ".[dev]"
	touch $@

install: $(STAMP) ## Create .venv with the pinned stack (requirements.lock) and vlaexp
	@$(PY) -c "import vlaexp, torch, lightning, hydra, lerobot, mujoco; print('vlaexp', vlaexp.__version__, '| torch', torch.__version__, '| mujoco', mujoco.__version__)"

demo: install ## Run the quickstart experiment offline on CPU (collect, train, eval, report)
	$(PY) -m vlaexp +experiment=quickstart

test: install ## Fast tests (CPU, < 15 min on 2 cores); the README's test command
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not slow and not gpu and not sim" --durations=15

test-full: install ## Every CPU test, including slow and sim ones
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not gpu"

test-slow: install ## Only the slow tests
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "slow and not gpu"

test-sim: install ## Only the tests that need robosuite/LIBERO scenes
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "sim"

test-gpu: install ## Tests that need a CUDA device (run them on the GPU machine)
	$(PY) -m pytest -m "gpu"

lint: install ## ruff check + ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install ## Speed benchmarks; results (JSON + Markdown with their commands) in benchmarks/results/
	$(PY) benchmarks/run_all.py

SWEEP ?= +experiment=quickstart camera=agentview,wrist,both
sweep: install ## A local sweep, one job per process (override with SWEEP="...")
	$(PY) -m vlaexp -m $(SWEEP) hydra/launcher=joblib hydra.launcher.n_jobs=2

clean: ## Remove caches and build files (keeps .venv and outputs/)
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +
