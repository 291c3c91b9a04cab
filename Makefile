# Flare's daily loop. Every target creates .venv on first use.
#   make demo   - set up, generate, run the chat demo
#   make test   - set up, lint, type-check, check generated code, run the whole suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: all venv demo test lint types generate check-generated services pytest bench format clean

all: test

# examples/tcp_transport is a separate distribution (a transport plugin living
# outside flare_runtime): installed beside Flare so its entry point is real and
# tests/examples/test_tcp_transport.py runs the conformance suite through it.
$(STAMP): pyproject.toml examples/tcp_transport/pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,test]' -e examples/tcp_transport --config-settings editable_mode=compat
	@# compat mode puts the checkout on sys.path with a plain .pth file, which mypy
	@# follows (it cannot follow setuptools' default import hook); generated/
	@# (flare.options, flare.im) is the package's second root, so it gets its own.
	$(BIN)/python -c "import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()['purelib'], 'flare-generated.pth').write_text('$(CURDIR)/generated\n')"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.chat.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

types: $(STAMP)
	$(BIN)/mypy flare_codegen flare_runtime generated tests examples bench

generate: $(STAMP)
	$(BIN)/flare gen schemas -o generated

check-generated: $(STAMP)
	$(BIN)/python -m flare_codegen.check_generated schemas generated

services:
	bash .ci/services

# FLARE_REQUIRE_SERVICES=1: a test whose real server (PostgreSQL, Redis, Node.js,
# Chromium...) is missing fails instead of skipping.
pytest: $(STAMP) services
	FLARE_REQUIRE_SERVICES=1 $(BIN)/python -m pytest -q -p no:cacheprovider

test: lint types check-generated pytest

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
