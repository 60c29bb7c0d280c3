# One entry point for people and CI. Every target bootstraps what it needs, idempotently.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := tests/peers/node_modules/.installed

.PHONY: demo test check lint fmt typecheck bench clean venv peers system-peers

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

peers: $(NODE_STAMP)

$(NODE_STAMP): tests/peers/package.json tests/peers/package-lock.json
	cd tests/peers && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

system-peers:
	tools/ensure_system_peers

demo: venv
	$(BIN)/acvg-bridge demo

test: venv peers system-peers
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff format --check bridge tests bench tools
	$(BIN)/ruff check bridge tests bench tools

typecheck: venv
	$(BIN)/mypy
	$(BIN)/mypy --strict tools bench

fmt: venv
	$(BIN)/ruff format bridge tests bench tools
	$(BIN)/ruff check --fix bridge tests bench tools

check: lint typecheck test

bench: venv
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) tests/peers/node_modules .mypy_cache .pytest_cache .ruff_cache
