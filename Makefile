# ATM on Prefect: `make install`, `make demo`, `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install demo demo-iris test test-fast lint clean bench-autogluon

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	bash infra/system-packages.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade uv
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -e '.[test]'
	touch $@

# A real datarun on the embedded default (SQLite ModelHub, ./artifacts, Prefect without a server).
demo: install
	$(BIN)/atm demo

# Iris (3 classes) with every built-in method and metric f1 (mapped to f1_macro).
demo-iris: install
	$(BIN)/atm demo --dataset iris

# The whole suite; starts (or installs) MariaDB, PostgreSQL and moto's S3 server as needed.
test: install
	bash infra/test-services.sh
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The edit-run loop: SQLite and local files only (no MariaDB, PostgreSQL, S3 or Prefect server),
# the slow end-to-end cases left out, on two processes. `make test` runs everything.
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not services and not prefect and not slow" -n 2 -q

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) atm.db* artifacts .prefect .pytest_cache

# AutoGluon for benchmarks/quality.py, in a virtualenv of its own (it pins pandas < 2.4).
bench-autogluon:
	bash benchmarks/peers/setup_autogluon.sh
