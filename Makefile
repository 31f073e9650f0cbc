# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: venv test run bench bench-quick bench-citus lint generate docs clean

$(BIN)/ledger: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	@touch $@

venv: $(BIN)/ledger

# The whole suite against a throwaway PostgreSQL (or LEDGER_TEST_DATABASE_URL), in
# TEST_WORKERS processes (pytest-xdist), each with its own servers, each taking a whole
# test module at a time (a module's fixtures are made once). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: venv
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Serve the API on 127.0.0.1:8000 with an embedded PostgreSQL under ./data, and a webhook
# dispatcher beside it.
run: venv
	$(BIN)/ledger serve --demo --dispatcher

# Benchmarks (README, section Benchmarks): a durable throwaway PostgreSQL, results in
# bench/results/. The HTTP scenario needs wrk (apt-get install wrk).
$(VENV)/.bench-extra: pyproject.toml $(BIN)/ledger
	$(BIN)/pip install --quiet -e ".[test,bench]"
	@touch $@

bench: $(VENV)/.bench-extra
	@command -v wrk >/dev/null || echo "note: wrk is not installed (apt-get install wrk): the HTTP scenario will be skipped"
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: $(VENV)/.bench-extra
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

# The Citus scenario: the tests' local cluster (a coordinator and two workers, needs
# Citus installed) against one plain server, about 4 minutes: bench/results/citus.{md,json}.
bench-citus: $(VENV)/.bench-extra
	$(BIN)/python -m bench --citus $(BENCH_ARGS)

$(VENV)/.lint-extra: pyproject.toml $(BIN)/ledger
	$(BIN)/pip install --quiet -e ".[test,lint]"
	@touch $@

# Ledger (ledger_py/_client_sync.py) is generated from AsyncLedger
# (ledger_py/_client_async.py): `make generate` writes it, `make lint` fails
# when it is out of date.
generate: $(VENV)/.lint-extra
	$(BIN)/python tools/async_to_sync.py

lint: $(VENV)/.lint-extra
	$(BIN)/python tools/async_to_sync.py --check
	$(BIN)/ruff check ledger_py web ledger_cli tests bench tools
	$(BIN)/mypy
	$(BIN)/mypy tools
	$(BIN)/lint-imports

# docs/SQL.md, the SQL API's reference, from the catalog of a throwaway migrated
# database (tests/sql/test_sql_reference.py fails when it is out of date).
docs: venv
	$(BIN)/python -m tools.sql_reference

clean:
	rm -rf $(VENV) build dist *.egg-info
