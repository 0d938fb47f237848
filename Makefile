# felund: `make test` is what CI runs (after .ci/run has installed system packages);
# `make check` is the quick loop (lint, types, the unit tier).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The dev extras, stamped by pyproject.toml: a venv made by the README's
# `pip install -e .` (no extras) still gets them before any test runs.
DEV    := $(VENV)/.dev-installed

.PHONY: all venv check test lint typecheck unit integration e2e fuzz bench run clean

all: test

$(DEV): pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(DEV)

lint: venv
	$(BIN)/ruff check felund services tests bench
	$(BIN)/ruff format --check felund services tests bench

typecheck: venv
	$(BIN)/mypy

# No process, no socket: the sans-IO cores, formats, the store on a file.
unit: venv
	$(BIN)/pytest -q tests/unit

# Real nodes and relays on 127.0.0.1.
integration: venv
	$(BIN)/pytest -q -n 2 tests/integration

# The curses ui under tmux, the browser client in Chromium, systemd and Prometheus.
e2e: venv
	$(BIN)/pytest -q -n 2 tests/e2e

# Hypothesis, long: the relay's parsers in-process and a real relay process, with
# FUZZ_EXAMPLES examples per test (the unit tier runs 200 each).
FUZZ_EXAMPLES ?= 20000
fuzz: venv
	FELUND_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q \
		tests/unit/test_relay_fuzz.py tests/unit/test_frame_fuzz.py tests/integration/test_relay_fuzz.py

# The quick loop: lint, types, unit tier (well under a minute).
check: lint typecheck unit

# Lint, types, then every test (real processes, real sockets, real SQLite).
test: lint typecheck
	$(BIN)/pytest -q -n 2

bench: venv
	$(BIN)/python -m bench

run: venv
	$(BIN)/felund run

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
