# Two entry points: `make run` (set up and start everything) and `make test` (set up and run
# every check). Each creates .venv and installs exactly the pinned versions it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NPM_DIR := .cache/npm
CLAUDE := $(NPM_DIR)/node_modules/.bin/claude

.PHONY: run test venv test-deps lint typecheck pytest unit integration bench clean

# Agents run the pinned Claude Code CLI installed here (HIVE_CLAUDE_BIN overrides it).
run: $(VENV)/.installed-run $(CLAUDE)
	PATH="$(CURDIR)/$(NPM_DIR)/node_modules/.bin:$$PATH" $(BIN)/hive up

test: test-deps lint typecheck pytest

$(VENV)/bin/python:
	@scripts/check-python.sh $(PYTHON)
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: pyproject.toml requirements.lock | $(VENV)/bin/python
	$(BIN)/pip install -q -c requirements.lock -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml requirements.lock | $(VENV)/bin/python
	$(BIN)/pip install -q -c requirements.lock -e '.[test]'
	touch $@ $(VENV)/.installed-run

$(CLAUDE): tools/npm/package.json tools/npm/package-lock.json
	@scripts/check-node.sh
	mkdir -p $(NPM_DIR)
	cp tools/npm/package.json tools/npm/package-lock.json $(NPM_DIR)/
	cd $(NPM_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

test-deps: $(VENV)/.installed-test $(CLAUDE)
	scripts/install-system-deps.sh

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy .

pytest: test-deps
	$(BIN)/pytest

unit: $(VENV)/.installed-test
	$(BIN)/pytest tests/unit tests/workflows

integration: test-deps
	$(BIN)/pytest -m integration

# Every benchmark (~5 min on 2 cores); updates the table in docs/BENCHMARKS.md.
bench: $(VENV)/.installed-test
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
