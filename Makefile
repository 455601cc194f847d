# Two entry points: `make demo` and `make test`. Both create .venv and install what they need.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=
PG_INSTALL ?= 1
BROWSER_INSTALL ?= 1

.PHONY: demo test test-fast bench install dev pg browser lint clean

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

# PostgreSQL server binaries for the knowledge-layer tests, which start a private server on
# 127.0.0.1 themselves. Installed with apt-get where missing (as root, PG_INSTALL=1); where that is
# not possible the PostgreSQL tests skip with the reason and everything else still runs.
pg:
	@if command -v postgres >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then \
	  :; \
	elif [ "$(PG_INSTALL)" != 1 ]; then \
	  echo "PostgreSQL is not installed (PG_INSTALL=$(PG_INSTALL)): its tests will be skipped"; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "PostgreSQL is not installed and there is no apt-get as root: its tests will be skipped"; \
	else \
	  echo "installing PostgreSQL with apt-get for the knowledge-layer tests"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>&1 \
	    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql; }; } \
	    || echo "PostgreSQL could not be installed: its tests will be skipped"; \
	fi

# Debian's chromium and chromedriver for the dashboard's browser tests (tests/serve, marker
# `browser`), which drive headless chromium through selenium. Installed with apt-get where missing
# (as root, BROWSER_INSTALL=1); where that is not possible those tests skip with the reason.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
	  :; \
	elif [ "$(BROWSER_INSTALL)" != 1 ]; then \
	  echo "chromium is not installed (BROWSER_INSTALL=$(BROWSER_INSTALL)): the browser tests will be skipped"; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "chromium is not installed and there is no apt-get as root: the browser tests will be skipped"; \
	else \
	  echo "installing chromium and chromium-driver with apt-get for the browser tests"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
	    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver; }; } \
	    || echo "chromium could not be installed: the browser tests will be skipped"; \
	fi

demo: $(VENV)/.installed
	$(VENV)/bin/agenticrs demo

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests bench

test: $(VENV)/.dev pg browser lint
	$(PY) -m pytest -n 2 --dist loadscope -q $(PYTEST_ARGS)

test-fast: $(VENV)/.dev pg browser lint
	$(PY) -m pytest -n 2 --dist loadscope -q -m "not slow" $(PYTEST_ARGS)

bench: $(VENV)/.dev
	$(PY) bench/ctr_benchmark.py --dataset frappe --models lr,fm,deepfm,dcnv2 --seeds 3 --json bench/out/frappe.json

clean:
	rm -rf $(VENV) .cache runs .pytest_cache
