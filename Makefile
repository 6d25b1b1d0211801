# The appliance's tasks. `make help` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.DEFAULT_GOAL := help
.PHONY: help system-deps install install-test lock run test test-fast lint format bench bench-quick clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel

# Every third-party package comes from a lock with hashes (pip refuses a file whose hash is not listed);
# the appliance itself is installed on top, editable, without resolving anything again.
$(VENV)/.installed-run: requirements/run.lock pyproject.toml | $(VENV)/bin/python
	$(PIP) install --require-hashes -r requirements/run.lock
	$(PIP) install --no-deps -e .
	@touch $@

# The test lock builds PyGObject (GigE Vision cameras) against system headers: system-deps comes first.
$(VENV)/.installed-test: requirements/test.lock pyproject.toml | system-deps $(VENV)/bin/python
	$(PIP) install --require-hashes -r requirements/test.lock
	$(PIP) install --no-deps -e .
	@touch $@ $(VENV)/.installed-run

system-deps: ## install the system packages the tests need (requirements/apt.txt) when any is missing
	@bash requirements/system-deps.sh

install: $(VENV)/.installed-run ## install the appliance with what the box runs (training included) into .venv

install-test: system-deps $(VENV)/.installed-test ## install the system packages, then the appliance with training and test tools into .venv

lock: ## regenerate requirements/*.lock (pinned by hash) after a dependency change in pyproject.toml
	python3 -m venv .venv-lock && .venv-lock/bin/pip install -q pip-tools==7.6.2
	.venv-lock/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --extra train \
	  -o requirements/run.lock pyproject.toml
	.venv-lock/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --extra train --extra genicam --extra dev \
	  -o requirements/test.lock pyproject.toml
	sed -i '/^--extra-index-url /d; /^--find-links /d; /^--index-url /d' requirements/run.lock requirements/test.lock
	# The genicam extra alone (PyGObject + pycairo), for firmware_scripts/install.sh: its entries of test.lock.
	{ sed -n '1,3p' requirements/genicam.lock; awk '/^[a-z0-9]/ { keep = /^(pycairo|pygobject)==/ } keep' \
	  requirements/test.lock; } > requirements/genicam.lock.new && mv requirements/genicam.lock.new requirements/genicam.lock

run: install ## the whole box on 127.0.0.1:8000 (web, worker, camera) with SQLite and ./var
	$(VENV)/bin/appliance run

test: install-test ## install everything (system packages included) and run the whole test suite
	$(VENV)/bin/pytest

test-fast: install-test ## the suite without browser and training tests
	$(VENV)/bin/pytest -m "not browser and not slow"

lint: install-test ## ruff (format check + lint) and mypy on appliance/
	$(VENV)/bin/ruff format --check appliance tests bench
	$(VENV)/bin/ruff check appliance tests bench
	$(VENV)/bin/mypy appliance

format: install-test ## apply ruff's formatting and fixes
	$(VENV)/bin/ruff format appliance tests bench
	$(VENV)/bin/ruff check --fix appliance tests bench

bench: install-test ## run every benchmark (figures as JSON on each script's last line)
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

bench-quick: install-test ## every benchmark with --quick (a minute or a few each; soak.py 10 minutes)
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script --quick || exit 1; done

clean: ## remove caches (not .venv, not var/)
	rm -rf .pytest_cache .mypy_cache .ruff_cache test-artifacts
