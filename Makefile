# The two commands a newcomer needs: `make dev` (the demo) and `make test` (the test suite, with
# a short chaos run of 300 jobs); `make chaos` runs the full chaos suite (3000 jobs, ~5-8 min).
# Both first run scripts/bootstrap.sh: server binaries, a project virtual environment (.venv),
# and notifier installed into it; a second run skips what is done and starts at once.
#   PYTHON=/usr/bin/python3  the Python to make .venv from (a virtual environment is used as is)
#   VENV=                    install into PYTHON itself instead of .venv
PYTHON ?= python3
VENV ?= .venv
BOOTSTRAP = PYTHON='$(PYTHON)' VENV='$(VENV)' bash scripts/bootstrap.sh

.PHONY: dev test chaos lint bootstrap bench

bootstrap:
	@$(BOOTSTRAP) >/dev/null

dev:
	@py=$$($(BOOTSTRAP)) && exec "$$py" -m notifier.cli dev

test:
	@py=$$($(BOOTSTRAP)) && exec "$$py" -m pytest -q

# CHAOS_JOBS sets the size; CHAOS_REPORT=<file> also writes the figures as JSON.
chaos:
	@py=$$($(BOOTSTRAP)) && CHAOS_JOBS=$${CHAOS_JOBS:-3000} exec "$$py" -m pytest -q -s tests/chaos

lint:
	@py=$$($(BOOTSTRAP)) && "$$py" -m ruff check notifier tests bench && "$$py" -m mypy

# The benchmark (docs/performance.md): throwaway servers, ~15 minutes, results and plots in
# bench/results/. BENCH_ARGS=--quick for a smoke run.
bench:
	@py=$$($(BOOTSTRAP)) && "$$py" -m pip install -q -e '.[test,bench]' && "$$py" -m bench $(BENCH_ARGS)
