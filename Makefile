# `make test` is the one command CI runs: it builds .venv on a fresh machine, then tests.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test lint bench reproduce conformance-report stack-conformance lab clean

$(STAMP): pyproject.toml Makefile requirements-clients.txt requirements-clients-deps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch 2.13.0 is a CPU build the machine already holds; a bare `torch` would fetch CUDA wheels.
	$(PY) -m pip install --quiet torch==2.13.0
	# Real speculative-decoding packages the conformance harness is run against (sim/conformance/clients/):
	# their light imports with dependencies, then the pinned packages without theirs (servers,
	# CUDA tools, model hubs are not needed by the verifier functions).  Before the project: the
	# PyPI package `specdec` has a console script of the same name, which ours must replace.
	$(PY) -m pip install --quiet -r requirements-clients-deps.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-clients.txt
	# Quietly: the clients above lack their heavy requirements on purpose (--no-warn-conflicts),
	# and setuptools' notice about editable installs (a UserWarning) is not news.
	PYTHONWARNINGS=ignore::UserWarning $(PY) -m pip install --quiet --no-warn-conflicts \
		-e '.[test,torch,dask]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .

reproduce: $(STAMP)
	$(VENV)/bin/specdec reproduce --out results

# Every real client of sim/conformance/clients/ through the conformance harness (a few minutes).
conformance-report: $(STAMP)
	$(VENV)/bin/specdec conformance-report --out results

# Hugging Face assisted generation, whole stack, on the tiny transformers built here: stock
# settings, the ensemble mode and three stack bugs through check_generation (≈ 10 minutes on
# 2 busy cores); writes results/stack.md.
stack-conformance: $(STAMP)
	$(PY) -m sim.conformance.clients.hf_stack --out results

# JupyterLab on notebooks/ (installs the `notebooks` extra: jupyterlab and ipywidgets).
lab: $(STAMP)
	$(PY) -m pip install --quiet -e '.[notebooks]'
	cd notebooks && ../$(VENV)/bin/jupyter lab

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
