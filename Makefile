# felund: `make test` is what CI runs (after .ci/run has installed system packages).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: all venv test lint typecheck unit bench run clean

all: test

$(BIN)/felund: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/felund

lint: venv
	$(BIN)/ruff check felund services tests bench
	$(BIN)/ruff format --check felund services tests bench

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q

# Lint, types, then every test (real processes, real sockets, real SQLite).
test: lint typecheck unit

bench: venv
	$(BIN)/python -m bench

run: venv
	$(BIN)/felund run

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
