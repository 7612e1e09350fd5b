# Developer entry points. Everything runs from the repository root with the project venv.
#   make up      run Temporal dev server + worker + API locally (Ctrl-C stops all)
#   make test    start the test services (PostgreSQL, Docker) and run the test suite
#                extra pytest arguments: make test PYTEST_ARGS='-k runs -x'
#   make lint    ruff
#   make bench   orchestration benchmark
#   make clean   remove the local data directory (.data)

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help venv up test lint bench clean

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

venv: $(STAMP)

# (Re)install only when pyproject.toml is newer than the stamp (or the venv is missing).
# A venv without a working pip (e.g. created before python3-venv was installed) is rebuilt.
$(STAMP): pyproject.toml
	@if ! $(VPY) -m pip --version >/dev/null 2>&1; then \
		echo "creating $(VENV) with $(PYTHON)"; \
		rm -rf $(VENV); \
		$(PYTHON) -m venv $(VENV) || { echo "error: '$(PYTHON) -m venv' failed (on Debian: apt-get install python3-venv)" >&2; exit 1; }; \
	fi
	$(VPY) -m pip install --disable-pip-version-check -q -e '.[test]'
	@touch $@

up: venv
	$(VPY) scripts/up.py

test: venv
	bash scripts/test-services.sh
	$(VPY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

bench: venv
	$(VPY) bench/orchestration.py

clean:
	rm -rf .data
