# Two commands do everything on a fresh machine: `make demo` and `make test`
# (and `make docs` for the documentation site).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: demo test test-slow docs lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The docs extra on top of the test setup (make test does not need it).
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e ".[dev,docs]"
	touch $(DOCS_STAMP)

demo: $(STAMP)
	MPLBACKEND=Agg $(PY) examples/motivating_case.py --out docs/figures

test: $(STAMP)
	JAX_PLATFORMS=cpu MPLBACKEND=Agg $(PY) -m pytest

test-slow: $(STAMP)
	JAX_PLATFORMS=cpu MPLBACKEND=Agg $(PY) -m pytest -m slow

# A clean build, warnings as errors; every example in examples/ runs during it.
docs: $(DOCS_STAMP)
	rm -rf docs/_build docs/auto_examples docs/api docs/_generated docs/sg_execution_times.rst
	JAX_PLATFORMS=cpu MPLBACKEND=Agg $(PY) -m sphinx -W --keep-going -b html docs docs/_build/html
	JAX_PLATFORMS=cpu $(PY) docs/_ext/check_site.py docs/_build/html
	@echo "open docs/_build/html/index.html"

lint: $(STAMP)
	$(PY) -m ruff check bayeskernel tests examples benchmarks docs/conf.py docs/_ext
	$(PY) -m ruff format --check bayeskernel tests examples benchmarks docs/conf.py docs/_ext

format: $(STAMP)
	$(PY) -m ruff format bayeskernel tests examples benchmarks docs/conf.py docs/_ext
	$(PY) -m ruff check --fix bayeskernel tests examples benchmarks docs/conf.py docs/_ext

bench: $(STAMP)
	$(PY) benchmarks/bench_methods.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
	rm -rf docs/_build docs/auto_examples docs/api docs/_generated docs/sg_execution_times.rst
