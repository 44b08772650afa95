# One command runs the service, one runs the tests; both create .venv and install first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint demo simulator bench bench-smoke clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml client/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@# The service and the client package, editable: imports work from any folder, no sys.path patches
	@# (PYTHONWARNINGS quiets setuptools' note that folders named like the packages come first: they are them).
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet --no-deps -e . -e ./client
	@touch $(STAMP)

## run: the service on http://127.0.0.1:8000 (dev settings filled in, simulator started; see README)
run: $(STAMP)
	$(BIN)/python -m scripts.devserver

## test: lint and types, then every test, unit and integration (starts its own redis-server and simulator)
test: lint
	@scripts/ensure-redis-server
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## lint: ruff (style and format) and mypy (vault/ and auth/ strictly, the rest by default rules)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## demo: the whole flow offline, step by step
demo: $(STAMP)
	$(BIN)/python -m scripts.demo

## simulator: only the Trackunit simulator, on port 5001
simulator: $(STAMP)
	$(BIN)/python -m simulator serve --port 5001

## bench: the benchmark of issue 5 (redis-server, simulator, gunicorn, wrk; a few minutes; see bench/README.md)
bench: $(STAMP)
	@scripts/ensure-redis-server
	$(BIN)/python -m bench.run $(BENCH_ARGS)

## bench-smoke: the same in a few seconds, counts asserted, no throughput threshold
bench-smoke: $(STAMP)
	@scripts/ensure-redis-server
	$(BIN)/python -m bench.run --smoke $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
