# `make run` starts the whole stack locally; `make test` runs the test suite. Both install into .venv first.
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
HOST_PYTHON ?= python3

.PHONY: install run test lint samples constraints clean

install: $(STAMP)

$(STAMP): requirements/*.txt constraints.txt
	test -x $(PYTHON) || $(HOST_PYTHON) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip==26.3
	# torch first and alone: its CPU build. Anything installed before it that depends on torch would
	# make pip fetch the default build and several GB of CUDA packages.
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -r requirements/dev.txt -c constraints.txt
	touch $(STAMP)

run: install
	$(PYTHON) -m devstack

test: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest

lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

samples: install
	$(PYTHON) data/generate.py

# Regenerate the full pin list after changing requirements/*.txt.
constraints: install
	{ sed -n '1,2p' constraints.txt; $(PYTHON) -m pip freeze --exclude-editable | grep -viE '^(torch|pip|setuptools)=='; } > constraints.new
	mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) .devstack output
