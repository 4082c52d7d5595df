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

.PHONY: install run test lint format clean stack stack-down stack-status serve-bench bench bench-gate bench-accept ab-gate loadtest loadtest-compare

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
	$(BIN)/ruff check app tests devstack bench loadtests gunicorn.conf.py
	$(BIN)/ruff format --check app tests devstack bench loadtests gunicorn.conf.py
	$(BIN)/mypy

format: install
	$(BIN)/ruff format app tests devstack bench loadtests gunicorn.conf.py
	$(BIN)/ruff check --fix app tests devstack bench loadtests gunicorn.conf.py

# The serving stack on this machine (no Docker): PostgreSQL, Redis, gunicorn + gevent, Nginx,
# started detached under .stack/ (state in .stack/state.json); configuration in stack.env.
stack: install
	$(BIN)/python -m devstack.stack up

stack-down:
	$(BIN)/python -m devstack.stack down

stack-status:
	$(BIN)/python -m devstack.stack status

# Nginx microcache vs static file, gunicorn app vs bare view (wrk; needs `make stack`).
serve-bench: install
	bash scripts/ensure-servers.sh --bench
	$(BIN)/python -m devstack.serve_bench $(BENCH_ARGS)

# Wall-clock microbenchmarks of the hot paths (pytest-benchmark), results as JSON.
bench: install
	bash scripts/ensure-servers.sh
	mkdir -p bench/results
	$(BIN)/python -m pytest bench -p no:cacheprovider --benchmark-json=bench/results/latest.json \
		--benchmark-columns=min,median,mean,stddev,rounds --benchmark-sort=name $(PYTEST_ARGS)

# Deterministic gate: callgrind instruction counts vs bench/baseline.json (5% default
# tolerance) and SQL statements per request vs bench/sql_budget.json (exact).
bench-gate: install
	bash scripts/ensure-servers.sh --gate
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_sql_budget.py
	$(BIN)/python -m bench.gate check $(GATE_ARGS)

# Locust scenarios against the local stack (stood up and torn down unless one is running):
# make loadtest SCENARIO=readers|pollers|mixed|cold|spike|smoke [LOADTEST_ARGS="--via app --duration 2m"]
# make loadtest SCENARIO=capacity [LOADTEST_ARGS="--mix readers|pollers|mixed --via nginx|app"]: the knee
SCENARIO ?= smoke
loadtest: install
	bash scripts/ensure-servers.sh
	$(BIN)/python loadtests/run.py $(SCENARIO) $(LOADTEST_ARGS)

# Two load-test reports side by side, ratio B/A per endpoint (Markdown + PNG):
# make loadtest-compare RUN_A=loadtests/reports/<a> RUN_B=loadtests/reports/<b>
loadtest-compare: install
	@test -n "$(RUN_A)" -a -n "$(RUN_B)" || { echo 'usage: make loadtest-compare RUN_A=<report dir> RUN_B=<report dir>'; exit 2; }
	$(BIN)/python loadtests/run.py compare $(RUN_A) $(RUN_B) $(COMPARE_ARGS)

# Wall-clock A/B: working tree vs BASELINE (default: merge-base with main), interleaved wrk
# runs, median of per-pair throughput ratios; fails below 0.90.
ab-gate: install
	bash scripts/ensure-servers.sh --bench
	$(BIN)/python -m bench.ab $(if $(BASELINE),--baseline $(BASELINE)) $(AB_ARGS)

# Accept new gate numbers: make bench-accept REASON="why the new numbers are right"
bench-accept: install
	@test -n "$(REASON)" || { echo 'usage: make bench-accept REASON="..."'; exit 2; }
	bash scripts/ensure-servers.sh --gate
	SQL_BUDGET_ACCEPT=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_sql_budget.py
	$(BIN)/python -m bench.gate accept --reason "$(REASON)" $(GATE_ARGS)

clean:
	rm -rf $(VENV) instance .pytest_cache .mypy_cache .ruff_cache
