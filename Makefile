# Everything the project needs is installed by these targets into .venv.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv test lint typecheck unit demo bench proto clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check gateway loadtest tests
	$(BIN)/ruff format --check gateway loadtest tests
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

demo: $(STAMP)
	$(BIN)/python -m gateway demo

bench: $(STAMP)
	$(BIN)/python -m loadtest.bench

proto: $(STAMP)
	$(BIN)/python scripts/genproto.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache demo-run
