# Isthmus developer commands. Each target creates the virtualenv first if it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/isthmus demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check middleware adapters deploy tests
	$(VENV)/bin/mypy middleware adapters

bench: $(STAMP)
	$(VENV)/bin/isthmus bench --json

clean:
	rm -rf $(VENV) .isthmus .pytest_cache .mypy_cache .ruff_cache *.egg-info
