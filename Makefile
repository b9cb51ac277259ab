# The two commands a new user needs: `make demo` and `make test`. Both set everything up first.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.trainflow-installed

export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_USAGE_STATS_ENABLED := 0
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install test test-slow demo score serve warehouse bench bench-tune bench-score bench-memory soak clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]' 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -c "import trainflow, ray, xgboost, prefect, mlflow"
	@touch $(STAMP)

warehouse: install
	$(BIN)/python -m trainflow.data.demo --if-missing

demo: warehouse
	$(BIN)/trainflow run deployments/specs/credit_risk_xgboost.yaml

# Batch scoring with the demo's champion (run `make demo` first): scores NEW_APPLICANTS into data/scores.duckdb.
score: warehouse
	$(BIN)/trainflow score deployments/specs/credit_risk_scoring.yaml

# Serve one deployment per spec in deployments/specs with its schedule; Ctrl-C stops what it started.
serve: warehouse
	$(BIN)/trainflow serve

# Two pytest workers, each with its own session Ray, Prefect server and TRAINFLOW_HOME: most of a test's
# time is spent waiting for processes to start, so two share two cores well. A file stays on one worker
# (its module fixtures are made once). TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# Multi-node clusters and long worker-kill tests (CI runs them after `make test`).
test-slow: install
	$(BIN)/python -m pytest -m slow

bench: install
	$(BIN)/python bench/run.py

# A 16-trial search on 2M x 32 rows: trainflow's spec search against Ray Tune (see bench/tune.py).
bench-tune: install
	$(BIN)/python bench/tune.py

# Batch scoring at 1M and 8M rows: trainflow's scoring job against plain per-CPU processes (bench/score.py).
bench-score: install
	$(BIN)/python bench/score.py

# Worker memory of an XGBoost fit in memory and from external memory (8M x 32; see bench/memory.py).
bench-memory: install
	$(BIN)/python bench/memory.py

soak: install
	$(BIN)/python -m pytest -m soak

clean:
	rm -rf $(VENV) data .trainflow mlflow.db mlartifacts
