# The two commands a newcomer needs: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PIP     = $(BIN)/python -m pip

.PHONY: install install-dev serve test lint bench bench-quick

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

bench-quick: install-dev
	$(PIP) install -e ".[bench]"
	$(BIN)/python -m bench --quick

bench: install-dev
	$(PIP) install -e ".[bench]"
	$(BIN)/python -m bench
