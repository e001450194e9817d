# The two commands a newcomer needs: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PIP     = $(BIN)/python -m pip

.PHONY: install install-dev serve test lint bench bench-quick bench-smoke bench-install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

install: $(BIN)/python
	$(PIP) install -e ".[server,local]"

install-dev: $(BIN)/python
	$(PIP) install -e ".[server,local,bedrock,structured,redis,test]"

## install, then run the HTTP runtime on the embedded default (SQLite + local SmolLM2 model)
serve: install
	$(BIN)/polyroute serve

lint:
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

## install, lint, type-check and run the whole test suite
test: install-dev lint
	$(BIN)/pytest

# The benchmark gets its own venv: litellm pins an older openai SDK than the tests use.
BENCH_VENV ?= .venv-bench
BENCH_BIN   = $(BENCH_VENV)/bin

$(BENCH_BIN)/python:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/python -m pip install --upgrade pip

bench-install: $(BENCH_BIN)/python
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || echo "wrk unavailable: HTTP sections will be skipped"
	$(BENCH_BIN)/python -m pip install -e ".[server,bench]" pytest pytest-asyncio

## smoke run (~3 min): asserts no speed, fails only if polyroute itself errors
bench-quick: bench-install
	$(BENCH_BIN)/python -m pytest -q bench/tests
	$(BENCH_BIN)/python -m bench --quick

## CI's smoke: the in-process and import sections must run without a single polyroute error;
## the load sections run too, but wrk timeouts on a shared 2-core runner are reported, not fatal
bench-smoke: bench-install
	$(BENCH_BIN)/python -m pytest -q bench/tests
	$(BENCH_BIN)/python -m bench --quick --only inprocess,imports
	$(BENCH_BIN)/python -m bench --quick --only http,scenario --merge || echo "bench: load sections reported errors (see bench/results/quick/results.md)"

## full run (~35 min) -> bench/results/
bench: bench-install
	$(BENCH_BIN)/python -m bench
