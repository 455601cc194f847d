# Two entry points: `make demo` and `make test`. Both create .venv and install what they need.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test test-fast bench install dev clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PIP) install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev

demo: $(VENV)/.installed
	$(VENV)/bin/agenticrs demo

test: $(VENV)/.dev
	$(PY) -m pytest -n 2 --dist loadfile -q $(PYTEST_ARGS)

test-fast: $(VENV)/.dev
	$(PY) -m pytest -n 2 --dist loadfile -q -m "not slow" $(PYTEST_ARGS)

bench: $(VENV)/.dev
	$(PY) bench/ctr_benchmark.py --dataset frappe --models lr,fm,deepfm,dcnv2 --seeds 3 --json bench/out/frappe.json

clean:
	rm -rf $(VENV) .cache runs .pytest_cache
