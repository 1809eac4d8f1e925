# Two commands for a newcomer: `make run` (set up and serve) and `make test` (lint + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(or $(ABSTRACTGATEWAY_DATA_DIR),data)
# The repository's sample workflows (examples/flows), built by `make flows`, unless the env names others.
FLOWS_DIR ?= $(or $(ABSTRACTGATEWAY_FLOWS_DIR),build/flows)
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: install flows test-deps run test lint format chaos fuzz bench-report bench-store bench-runner bench-api bench-ops bench-pg clean

# The venv is rebuilt when pyproject.toml changes. torch first, pinned to the CPU 2.13.0 build
# (constraints.txt), then everything: the runner's media stack and the test tools.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,media]"
	touch $@

install: $(VENV)/.installed

# Pack examples/flows/* into build/flows/*.flow with abstractruntime's packer (skipped when current).
flows: install
	$(BIN)/abstractgateway flows build

# Set up the venv, the sample flows and the embedded SQLite db (migrated: this is a developer's own
# data dir), make a token if none is set, serve on 127.0.0.1.
run: install flows
	@mkdir -p "$(DATA_DIR)"
	@$(BIN)/abstractgateway migrate --data-dir "$(DATA_DIR)"
	@if [ -z "$$ABSTRACTGATEWAY_AUTH_TOKEN" ] && [ ! -s "$(DATA_DIR)/auth_token" ]; then \
		umask 077; $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(32))" > "$(DATA_DIR)/auth_token"; fi
	@token="$${ABSTRACTGATEWAY_AUTH_TOKEN:-$$(cat "$(DATA_DIR)/auth_token")}"; \
	echo "gateway: http://$(HOST):$(PORT)  token: $$token  (db: $(DATA_DIR)/gateway.sqlite3)"; \
	ABSTRACTGATEWAY_AUTH_TOKEN="$$token" ABSTRACTGATEWAY_DATA_DIR="$(DATA_DIR)" \
	ABSTRACTGATEWAY_FLOWS_DIR="$(FLOWS_DIR)" exec $(BIN)/abstractgateway serve --host $(HOST) --port $(PORT)

# Style, then types ([tool.mypy]: strict for shared_store), then the import contracts between the API,
# the runner and the store ([tool.importlinter]).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Debian packages the tests drive for real (.ci/apt-packages.txt), installed when missing and root.
test-deps:
	@bash .ci/system-deps.sh

# The API and runner end-to-end tests run a second time with the store on PostgreSQL
# (tests/backends.py: each test gets a fresh database on a server the run starts; tests/store runs on
# both backends in the first pass). Left out, as they never open the store through those fixtures:
# the files that start `serve --db FILE` themselves (CLI, supervision, logs, rolling upgrade: the
# PostgreSQL CLI has tests/pg/test_serve_pg.py), request decoding and the route table (no store
# difference), and the in-process LLM unit tests.
PG_E2E_SKIP = test_serve_cli test_supervision test_serve_logs test_rolling_upgrade test_request_rules \
	test_openapi test_light test_local_llm
PG_E2E = tests/api tests/runner $(foreach f,$(PG_E2E_SKIP),--ignore=tests/api/$(f).py --ignore=tests/runner/$(f).py)

# Lint, then the whole suite (SQLite), then the end-to-end tests again on PostgreSQL. pytest exits 5
# when it collects no test: that fails here too.
test: lint test-deps
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest
	ABSTRACTGATEWAY_TEST_BACKEND=postgresql HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest $(PG_E2E)

# The PostgreSQL pass alone (what `make test` runs after the SQLite suite).
.PHONY: test-pg-e2e
test-pg-e2e: test-deps
	ABSTRACTGATEWAY_TEST_BACKEND=postgresql HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest $(PG_E2E)

# The long forms of the chaos and fuzz suites (`make test` runs their short CI forms).
chaos: install
	CHAOS_TRIALS=$(or $(CHAOS_TRIALS),200) HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests/chaos -ra

fuzz: install
	FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),300) FUZZ_STATEFUL_STEPS=20 FUZZ_RANDOM=1 $(BIN)/python -m pytest tests/fuzz -ra

# Store, runner, API and operations benchmarks into docs/benchmarks.md, then the store, runner and API
# ones again on a durable throwaway PostgreSQL (test-deps installs postgresql-15 when root; without it
# the document's PostgreSQL column says why it is missing). With BENCH_BASELINE (an earlier report,
# docs/benchmarks-baseline.md by default) the document ends with every figure beside the baseline's.
BENCH_BASELINE ?= $(wildcard docs/benchmarks-baseline.md)
bench-report: install test-deps
	$(BIN)/python -m bench.report $(if $(BENCH_BASELINE),--baseline $(BENCH_BASELINE)) $(BENCH_ARGS)

bench-store: install
	$(BIN)/python -m bench.bench_store $(BENCH_ARGS)

bench-runner: install
	$(BIN)/python -m bench.bench_runner $(BENCH_ARGS)

bench-api: install
	$(BIN)/python -m bench.bench_api $(BENCH_ARGS)

bench-ops: install
	$(BIN)/python -m bench.bench_ops $(BENCH_ARGS)

# The PostgreSQL column's benches alone (each starts its own durable PostgreSQL; BENCH_ARGS=--quick).
bench-pg: install test-deps
	$(BIN)/python -m bench.bench_store --backend postgresql $(BENCH_ARGS)
	$(BIN)/python -m bench.bench_runner --backend postgresql $(BENCH_ARGS)
	$(BIN)/python -m bench.bench_api --backend postgresql $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info build

# The PostgreSQL store's tests alone: a throwaway PostgreSQL 15 per session (Debian postgresql-15,
# installed by test-deps); the network-namespace tests need root and skip, saying why, otherwise.
.PHONY: test-pg
test-pg: install test-deps
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest tests/pg tests/netns -ra
