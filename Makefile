# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	MPLBACKEND=Agg $(PY) examples/motivating_case.py --out docs/figures

test: $(STAMP)
	JAX_PLATFORMS=cpu MPLBACKEND=Agg $(PY) -m pytest

test-slow: $(STAMP)
	JAX_PLATFORMS=cpu MPLBACKEND=Agg $(PY) -m pytest -m slow

lint: $(STAMP)
	$(PY) -m ruff check bayeskernel tests examples benchmarks
	$(PY) -m ruff format --check bayeskernel tests examples benchmarks

format: $(STAMP)
	$(PY) -m ruff format bayeskernel tests examples benchmarks
	$(PY) -m ruff check --fix bayeskernel tests examples benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_methods.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
