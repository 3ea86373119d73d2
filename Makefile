# From a fresh clone, two commands do everything:
#   make demo   set up, then run `kcode fix` offline on a copy of examples/calc with the tiny local model
#   make test   set up, then lint, type-check and run the tests (what CI runs)
# Set-up is the README's step-by-step commands; it runs once, and again only when pyproject.toml changes.
# `make ... VENV=DIR` sets up (or reuses) another virtual environment; CI gives a fresh one each run.

VENV = .venv
SETUP_STAMP := $(VENV)/.kcode-setup

.PHONY: setup demo test

setup: $(SETUP_STAMP)

$(SETUP_STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install torch==2.13.0
	$(VENV)/bin/pip install -e '.[engine,swe,dev]'
	touch $@

demo: $(SETUP_STAMP)
	KCODE=$(VENV)/bin/kcode bash examples/demo.sh

test: $(SETUP_STAMP)
	. $(VENV)/bin/activate && ruff check . && mypy && python -m pytest -q
