# jobmon: every set-up step lives here, so a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The healthchecks-io client's own venv: its pins (httpx<0.28, packaging<25...)
# conflict with ours, and the tests drive it as a separate program anyway.
HC_VENV := .venv-hc

.PHONY: install run test test-pure accel bench lint all clean

install: $(VENV)/.installed $(HC_VENV)/.installed

# setup.py compiles the accelerator (src/jobmon/accel.py) if a C compiler works;
# JOBMON_PURE=1 make install builds pure Python.
$(VENV)/.installed: pyproject.toml setup.py src/jobmon/accel.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,celery]'
	$(VENV)/bin/jobmon --version
	touch $@

# Rebuilds the accelerator after its modules changed (until then they run from source).
accel: install
	$(PY) -m pip install -q --no-deps -e .
	$(VENV)/bin/jobmon --version

$(HC_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(HC_VENV)
	$(HC_VENV)/bin/python -m pip install -q --upgrade pip
	$(HC_VENV)/bin/python -m pip install -q healthchecks-io==0.4.4
	touch $@

run: install
	$(VENV)/bin/jobmon serve

test: install
	$(VENV)/bin/jobmon --version
	$(PY) -m pytest -q

# The same suite on the pure-Python fallback: the compiled modules imported from their .py.
test-pure: install
	JOBMON_PURE=1 $(VENV)/bin/jobmon --version
	JOBMON_PURE=1 $(PY) -m pytest -q

bench: install
	$(PY) bench/scale.py
	$(PY) bench/deadlines.py
	$(PY) bench/run.py
	$(PY) bench/scrape.py
	$(PY) bench/dashboard.py
	$(PY) bench/cluster.py
	$(PY) bench/hotpath.py
	$(PY) bench/storm.py
	$(PY) bench/celery.py
	$(PY) bench/stalls.py

lint: install
	$(VENV)/bin/ruff check setup.py src tests bench docs
	$(VENV)/bin/ruff format --check setup.py src tests bench docs
	$(VENV)/bin/mypy

all: lint test bench

clean:
	rm -rf $(VENV) $(HC_VENV) build src/jobmon/_accel.json jobmon-data tests/artifacts .pytest_cache .mypy_cache .ruff_cache
	find src -name "*.so" -delete
