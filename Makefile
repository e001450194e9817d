# The two commands a newcomer needs: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PIP     = $(BIN)/python -m pip

.PHONY: llama install install-dev serve test lint bench bench-quick bench-smoke bench-install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# llama-cpp-python compiles llama.cpp for the CPU it is built on (-march=native). Some VMs
# advertise Intel AMX but trap its instructions (SIGILL at the first decode), so on x86_64 the
# AMX kernels are left out (-mno-amx-*: explicit flags win over -march=native). pip's wheel
# cache ignores CMAKE_ARGS, so that build goes once into a wheelhouse of our own, reused by
# every later install on this machine, and always replaces a build that came from elsewhere.
LLAMA_VERSION ?= 0.3.36
WHEELHOUSE    ?= $(HOME)/.cache/polyroute/wheels/llama-cpp-python-noamx
LLAMA_NO_AMX   = -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CMAKE   ?= $(if $(filter x86_64,$(shell uname -m)),-DCMAKE_C_FLAGS='$(LLAMA_NO_AMX)' -DCMAKE_CXX_FLAGS='$(LLAMA_NO_AMX)')

llama: $(BIN)/python
	@ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CMAKE)" $(PIP) wheel --no-cache-dir --no-deps -w $(WHEELHOUSE) "llama-cpp-python==$(LLAMA_VERSION)"
	$(PIP) install --find-links $(WHEELHOUSE) "llama-cpp-python==$(LLAMA_VERSION)"
	$(PIP) install --force-reinstall --no-deps --no-index --find-links $(WHEELHOUSE) "llama-cpp-python==$(LLAMA_VERSION)"

install: llama
	$(PIP) install -e ".[server,local]"

install-dev: llama
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

## CI's smoke: every section must run without a single polyroute error (no speed thresholds).
## The load sections used to be report-only because of wrk timeouts in the sustained scenario;
## those were a real stall (httpcore's pool, see docs/performance.md), so now they fail CI too.
bench-smoke: bench-install
	$(BENCH_BIN)/python -m pytest -q bench/tests
	$(BENCH_BIN)/python -m bench --quick --only inprocess,imports
	$(BENCH_BIN)/python -m bench --quick --only http,scenario --merge

## full run (~35 min) -> bench/results/
bench: bench-install
	$(BENCH_BIN)/python -m bench
