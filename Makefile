# The two commands a newcomer needs: `make dev` (the demo) and `make test` (the test suite).
# Both install what is missing first (scripts/bootstrap.sh).
PYTHON ?= python3

.PHONY: dev test lint bootstrap

bootstrap:
	PYTHON=$(PYTHON) bash scripts/bootstrap.sh

dev: bootstrap
	$(PYTHON) -m notifier.cli dev

test: bootstrap
	$(PYTHON) -m pytest -q

lint:
	ruff check notifier tests
	mypy
