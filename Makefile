# target-userpilot developer commands. Needs only python3 (3.10+), pip and make; the tests that
# need a PostgreSQL server start PostgreSQL 15 from /usr/lib/postgresql/15/bin (skipped without
# it, except under CI).
#
#   make demo    load the bundled example into a local Userpilot sandbox and show the result
#   make test    lint, then every layer of the test suite: unit, integration, e2e
#   make unit    the unit tests: pure code, no sockets, no processes (seconds)
#   make integration  the sandbox over loopback HTTP, the target in process
#   make e2e     processes, signals, Meltano, tap-postgres, PostgreSQL
#   make lint    ruff format --check, ruff check and mypy
#   make readme  regenerate the README's settings table from `target-userpilot --about`
#   make hub     regenerate the Meltano Hub plugin definition (plugin/loaders/) from `--about`
#   make meltano install the pinned Meltano into .venv/meltano (make test needs it)
#   make tap-postgres install the pinned MeltanoLabs tap-postgres into .venv/tap-postgres (make test needs it)
#   make bench   run the benchmarks, section a side by side with commit f404c1e (BASELINE=)
#   make clean   remove the virtualenv and build/test leftovers

PY ?= python3
VENV = .venv
BIN = $(VENV)/bin
PYTHON = $(BIN)/python
# Written after a successful install; pip runs again only when pyproject.toml changes.
INSTALLED = $(VENV)/.installed
# Paths that may not exist yet in a fresh clone (git keeps no empty folders) are skipped.
LINT_PATHS = $(wildcard target_userpilot tests bench scripts)

.DEFAULT_GOAL := help
.PHONY: help venv install lint test unit integration e2e demo bench readme hub meltano tap-postgres clean

help:
	@sed -n 's/^#   //p' Makefile

venv: $(PYTHON)

$(PYTHON):
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --upgrade pip

install: $(INSTALLED)

$(INSTALLED): pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install -e '.[test,postgres]'
	touch $@

lint: $(INSTALLED)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy

# The layers of tests/ (see tests/conftest.py), each a make target that installs what it needs.
# Integration and e2e tests mostly wait on a sandbox, a server or a process rather than on the
# CPU: WORKERS pytest-xdist workers, one test file each at a time (files share module-level
# sandboxes and servers). tests/e2e/test_meltano*.py run the real Meltano CLI,
# tests/e2e/test_tap_postgres.py a published tap; each lives in its own virtualenv, reused while
# scripts/<name>-requirements.txt is unchanged.
WORKERS ?= 6
XDIST = -n $(WORKERS) --dist loadfile

# Lint, the unit layer and the two tools' virtualenvs at once (each prints its output whole when
# it ends); then the integration and e2e layers in one pool of workers, so that the longest
# end-to-end files overlap the integration files instead of following them.
test: $(INSTALLED)
	$(MAKE) --no-print-directory -j4 --output-sync=target lint unit meltano tap-postgres
	$(BIN)/pytest -q tests -m "integration or e2e" $(XDIST)

unit: $(INSTALLED)
	$(BIN)/pytest -q tests/unit -m unit

integration: $(INSTALLED)
	$(BIN)/pytest -q tests/integration -m integration $(XDIST)

# A test anywhere that needs a PostgreSQL server is end to end too, so e2e reads every folder.
e2e: $(INSTALLED) meltano tap-postgres
	$(BIN)/pytest -q tests -m e2e $(XDIST)

meltano: $(INSTALLED)
	$(PYTHON) scripts/meltano_venv.py

tap-postgres: $(INSTALLED)
	$(PYTHON) scripts/tap_postgres_venv.py

demo: $(INSTALLED)
	$(PYTHON) scripts/demo.py

# Section a of bench/run.py measures this commit's target beside the one of BASELINE (installed
# once into .bench/); `make bench BASELINE=` leaves it out.
BASELINE ?= f404c1e

bench: $(INSTALLED)
	$(PYTHON) bench/run.py $(if $(BASELINE),--baseline $(BASELINE))
	$(PYTHON) bench/events.py
	$(PYTHON) bench/imports.py
	$(PYTHON) bench/ledger.py
	$(PYTHON) bench/plan.py

readme: $(INSTALLED)
	$(PYTHON) scripts/readme_settings.py

hub: $(INSTALLED)
	$(PYTHON) scripts/hub_definition.py

clean:
	rm -rf $(VENV) .bench build dist *.egg-info .pytest_cache .ruff_cache userpilot-batches .target-userpilot
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
