# Two commands do everything on a fresh machine:
#   make run   set up, materialize every asset on the sample data, then serve the Dagster UI on :3000
#              and the API on :8000 until Ctrl-C
#   make test  set up, then run the test suite
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
export DAGSTER_HOME := $(CURDIR)/.dagster
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test install materialize ui api sample clean

install: $(VENV)/.installed

# torch first and pinned: its CPU build installs from the machine's local wheel; left to a
# dependency resolver, torch would pull several GB of CUDA packages.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

materialize: install
	$(BIN)/dagster job execute -m assets.definitions -j nightly

ui: install
	$(BIN)/dagster dev -m assets.definitions -h 127.0.0.1 -p 3000

api: install
	$(BIN)/uvicorn serve.main:app --host 127.0.0.1 --port 8000

# The API runs beside the Dagster UI and stops with it.
run: materialize
	$(BIN)/uvicorn serve.main:app --host 127.0.0.1 --port 8000 --log-level warning & api=$$!; \
	trap 'kill $$api 2>/dev/null' EXIT INT TERM; \
	$(BIN)/dagster dev -m assets.definitions -h 127.0.0.1 -p 3000

test: install
	$(BIN)/pytest

# Regenerate the embedded sample (deterministic: the committed files come out byte for byte).
sample: install
	$(BIN)/python -m pipeline.synthetic --out data/sample

clean:
	rm -rf warehouse.duckdb warehouse.duckdb.wal indexes snapshots reports .cache
