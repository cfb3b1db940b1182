# Two entry points a fresh machine needs: `make demo` and `make test`.
# Each one installs what it needs first (idempotent; see tools/setup_env.sh).
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: setup test test-slow demo lint

setup:
	@PYTHON=$(PYTHON) bash tools/setup_env.sh

test: setup
	$(PYTHON) -m pytest -q -m "not slow and not gpu" $(PYTEST_ARGS)

test-slow: setup
	$(PYTHON) -m pytest -q -m "slow" $(PYTEST_ARGS)

demo: setup
	$(PYTHON) -m drivetl demo

lint:
	$(PYTHON) -m ruff check drivetl tests tools
