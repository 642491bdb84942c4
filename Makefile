# southrock_api — `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
# CI sets this: a missing PostgreSQL or Redis fails the run instead of being skipped.
SOUTHROCK_TEST_REQUIRE_SERVICES ?=
export SOUTHROCK_TEST_REQUIRE_SERVICES

.DEFAULT_GOAL := help
.PHONY: help install serve test test-sqlite test-postgresql lint bench clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): requirements.txt setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the pinned requirements

serve: $(STAMP) ## Migrate, load demo data if empty, print a working curl line, serve on 127.0.0.1:8000
	$(BIN)/southrock db upgrade
	$(BIN)/southrock demo-setup --host $(HOST) --port $(PORT)
	SOUTHROCK_BIND=$(HOST):$(PORT) $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

test: $(STAMP) ## Run the suite on SQLite, then on PostgreSQL (when reachable; required in CI)
	$(MAKE) --no-print-directory test-sqlite
	@if [ -n "$(SOUTHROCK_TEST_REQUIRE_SERVICES)" ] || $(PY) -c "from tests.databases import postgres_available as a; raise SystemExit(0 if a() else 1)"; then \
		$(MAKE) --no-print-directory test-postgresql; \
	else \
		echo "*** PostgreSQL is not reachable: the PostgreSQL run was SKIPPED (SQLite run passed) ***"; \
	fi

test-sqlite: $(STAMP) ## Run the suite on SQLite
	SOUTHROCK_TEST_DATABASE=sqlite $(PY) -m pytest --cov --cov-report=term

test-postgresql: $(STAMP) ## Run the suite on PostgreSQL
	SOUTHROCK_TEST_DATABASE=postgresql $(PY) -m pytest

lint: $(STAMP) ## ruff and mypy over the package, tests and bench
	$(BIN)/ruff check southrock_api tests bench
	$(BIN)/mypy southrock_api tests bench

bench: $(STAMP) ## Measure API pages against the in-process floor; writes docs/benchmarks.md
	$(PY) bench/run.py

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .hypothesis .coverage htmlcov
