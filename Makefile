# Entry points (README): `make demo`, `make test` (ruff, then pytest), `make bench`. Each sets up .venv on
# first use with only the extras it needs: the demo gets no CUDA toolkit, the tests get what CI runs
# (the CUDA simulator, NVVM and ptxas for the PTX check, Dask, SciPy, scikit-learn).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXTRAS_demo := demo
EXTRAS_test := test,dask,cuda
EXTRAS_bench := bench
# the published benchmark table's exact versions (torch, JAX): for `make bench` only
CONSTRAINTS_bench := -c benchmarks/constraints.txt

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-%: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet $(CONSTRAINTS_$*) -e '.[$(EXTRAS_$*)]'
	touch $@

.PHONY: install demo test bench clean
install: $(VENV)/.installed-test

demo: $(VENV)/.installed-demo
	$(PY) examples/two_layer_net.py
	$(PY) examples/digits.py digits.png

test: $(VENV)/.installed-test
	$(PY) -m ruff check .
	$(PY) -m pytest tests --durations=20

bench: $(VENV)/.installed-bench
	$(PY) -m benchmarks --quick --neighbours

clean:
	rm -rf $(VENV) build *.egg-info
