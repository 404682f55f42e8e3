# Two entry points (README): `make demo` and `make test` (ruff, then pytest). Each sets up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dask,cuda]'
	touch $@

.PHONY: install demo test bench clean
install: $(VENV)/.installed

demo: install
	$(PY) examples/two_layer_net.py

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest tests

bench: install
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m benchmarks --quick --neighbours

clean:
	rm -rf $(VENV) build *.egg-info
