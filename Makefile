# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: venv test run bench bench-quick lint clean

$(BIN)/ledger: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	@touch $@

venv: $(BIN)/ledger

# The whole suite against a throwaway PostgreSQL (or LEDGER_TEST_DATABASE_URL).
test: venv
	$(BIN)/pytest -q $(PYTEST_ARGS)

# Serve the API on 127.0.0.1:8000 with an embedded PostgreSQL under ./data.
run: venv
	$(BIN)/ledger serve --demo

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

$(VENV)/.lint-extra: pyproject.toml $(BIN)/ledger
	$(BIN)/pip install --quiet -e ".[test,lint]"
	@touch $@

lint: $(VENV)/.lint-extra
	$(BIN)/ruff check ledger_py web ledger_cli tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build dist *.egg-info
