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

.PHONY: install run editor test test-fast test-lowest lint lint-openapi format clean stack stack-down stack-status cluster cluster-down cluster-status cluster-measure cluster-faults cluster-write-cost serve-bench bench bench-gate bench-accept ab-gate loadtest loadtest-compare compare

$(STAMP): requirements/dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/dev.txt
	touch $@

install: $(STAMP)

# Embedded default: SQLite file + in-process cache in instance/ (READWIRE_INSTANCE_DIR), demo data
# and the demo editor seeded once. One gevent worker (gunicorn.conf.py): one process, because
# the in-process cache is per process. `make run PORT=8001` for another port.
run: install
	$(FLASK) db upgrade
	$(FLASK) seed --posts $(DEMO_POSTS) --if-empty --demo-editor
	$(BIN)/gunicorn -c gunicorn.conf.py --workers 1 --bind $(HOST):$(PORT) --access-logfile - 'app:create_app()'

# An editor account: make editor NAME=alice; the password from EDITOR_PASSWORD, one line of
# piped stdin, or a prompt. Against the database in the environment (DATABASE_URL; default:
# the embedded instance/), e.g. after `eval "$$(.venv/bin/python -m devstack.stack env)"`.
editor: install
	@test -n "$(NAME)" || { echo 'usage: make editor NAME=username  (password: EDITOR_PASSWORD, piped stdin or prompt)'; exit 2; }
	$(FLASK) create-editor $(NAME)

# Starts throwaway PostgreSQL and Redis servers itself (installing the binaries if missing).
# --browser: Debian's chromium for the API reference test (tests/live/test_docs_browser.py).
test: install
	bash scripts/ensure-servers.sh --browser
	READWIRE_REQUIRE_BROWSER=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# The inner loop: everything but the tests marked slow (stack, gunicorn, embedded, EXPLAIN, fuzzing).
test-fast: install
	bash scripts/ensure-servers.sh
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The fast tests on the LOWEST versions pyproject.toml declares (uv's lowest-direct resolution:
# every direct dependency at its floor, the rest resolved against them), in a venv of their own.
# compile + sync, not install: an existing venv is moved down to the floors, never left above them.
LOWEST := .venv-lowest
test-lowest: install
	bash scripts/ensure-servers.sh
	test -x $(LOWEST)/bin/python || $(BIN)/uv venv --quiet --python $(BIN)/python $(LOWEST)
	$(BIN)/uv pip compile --quiet pyproject.toml --extra dev --resolution lowest-direct \
		--python-version 3.11 -o $(LOWEST)/requirements.txt
	$(BIN)/uv pip sync --quiet --python $(LOWEST)/bin/python $(LOWEST)/requirements.txt
	$(LOWEST)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install lint-openapi
	$(BIN)/ruff check app tests devstack bench loadtests scripts gunicorn.conf.py
	$(BIN)/ruff format --check app tests devstack bench loadtests scripts gunicorn.conf.py
	$(BIN)/mypy

# The OpenAPI document as served, checked by two independent validators: @redocly/cli
# (recommended rules; the pinned version in tools/package-lock.json) and openapi-spec-validator.
# Both must report 0 errors and 0 warnings.
TOOLS_STAMP := tools/node_modules/.installed
$(TOOLS_STAMP): tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint-openapi: install $(TOOLS_STAMP)
	mkdir -p build
	$(BIN)/python scripts/openapi.py dump build/openapi.json
	REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
		tools/node_modules/.bin/redocly lint --config tools/redocly.yaml --max-problems 1000 build/openapi.json
	$(BIN)/openapi-spec-validator --validation-errors all build/openapi.json

format: install
	$(BIN)/ruff format app tests devstack bench loadtests scripts gunicorn.conf.py
	$(BIN)/ruff check --fix app tests devstack bench loadtests scripts gunicorn.conf.py

# The serving stack on this machine (no Docker): PostgreSQL, Redis, gunicorn + gevent, Nginx,
# started detached under .stack/ (state in .stack/state.json); configuration in stack.env.
stack: install
	$(BIN)/python -m devstack.stack up

stack-down:
	$(BIN)/python -m devstack.stack down

stack-status:
	$(BIN)/python -m devstack.stack status

# Several machines' worth on this one (devstack/cluster.py): PostgreSQL primary + streaming
# replica, Redis primary + replica + 3 Sentinels, 2+ app nodes (gunicorn masters), Nginx over
# them; state in .cluster/state.json; ports and sizes in stack.env (CLUSTER_*).
cluster: install
	$(BIN)/python -m devstack.cluster up

cluster-down:
	$(BIN)/python -m devstack.cluster down

cluster-status:
	$(BIN)/python -m devstack.cluster status

# Per-request CPU costs (hit, 304, miss, write) of each tier, replica queries/s, Redis ops/s and
# edge requests/s against the running cluster (bounded wrk runs; needs `make cluster`).
cluster-measure: install
	bash scripts/ensure-servers.sh --bench
	$(BIN)/python -m devstack.capacity $(MEASURE_ARGS)

# Consistency under faults (issue 15): the mixed scenario through the cluster's Nginx while the
# replica's replay is paused, the Redis primary is SIGKILLed and an app node is SIGKILLed; reports
# stale reads, lost/duplicated acknowledged writes, 5xx per window, failover time (needs `make cluster`).
cluster-faults: install
	$(BIN)/python -m loadtests.cluster_faults $(FAULTS_ARGS)

# What the Redis failover safety costs a write: PATCH latency before/after, interleaved on the cluster.
cluster-write-cost: install
	$(BIN)/python -m bench.write_cost $(WRITE_COST_ARGS)

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
# make loadtest SCENARIO=chaos [LOADTEST_ARGS="--duration 90s --faults short"]: faults under load (issue 12)
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

# Side by side in one run (bench/compare/run.py, ~10 min): Readwire vs a tuned FastAPI + asyncpg peer
# and a bare-bytes Flask view; hit, 304, miss (first and deep pages, every URL distinct); servers on
# CPU 0, wrk on CPU 1; median of per-round ratios; bench/results/compare.{md,json}. Throwaway
# PostgreSQL/Redis with data kept in .compare/; ports POSTGRES_PORT REDIS_PORT APP_PORT PEER_PORT BARE_PORT.
compare: install
	bash scripts/ensure-servers.sh --bench
	$(BIN)/python -m bench.compare.run $(SIDE_BY_SIDE_ARGS)

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
	rm -rf $(VENV) $(LOWEST) instance build tools/node_modules .pytest_cache .mypy_cache .ruff_cache
