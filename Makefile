# Readwire: `make run` (embedded default, no servers) and `make test` (provisions its own servers).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FLASK := $(BIN)/flask --app app
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO_POSTS ?= 500

.PHONY: install run test lint format clean

$(STAMP): requirements/dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/dev.txt
	touch $@

install: $(STAMP)

# Embedded default: SQLite file + in-process cache in instance/, demo data seeded once.
# One process (threads) because the in-process cache is per process.
run: install
	$(FLASK) db upgrade
	$(FLASK) seed --posts $(DEMO_POSTS) --if-empty
	$(BIN)/gunicorn --workers 1 --threads 8 --bind $(HOST):$(PORT) --access-logfile - 'app:create_app()'

# Starts throwaway PostgreSQL and Redis servers itself (installing the binaries if missing).
test: install
	bash scripts/ensure-servers.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check app tests devstack bench
	$(BIN)/ruff format --check app tests devstack bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff format app tests devstack bench
	$(BIN)/ruff check --fix app tests devstack bench

clean:
	rm -rf $(VENV) instance .pytest_cache .mypy_cache .ruff_cache
