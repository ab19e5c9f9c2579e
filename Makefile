# `make demo` and `make test` are the README's contract with a fresh machine.
# torch==2.13.0 is installed first: it is the CPU wheel on this disk; any other torch request
# would pull a multi-GB CUDA build. The package's own torch requirement is a plain range.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# The demo needs the core package alone; the tests add every extra and the dev tools.
CORE    = $(VENV)/.nnmark-core
DEV     = $(VENV)/.nnmark-dev
# --no-compile: byte-compiling every installed module (ray, transformers, ...) took about a
# minute of a fresh `make test`; Python compiles the few modules it imports on first use, and
# keeps them: PYTHONDONTWRITEBYTECODE (set on some machines) is dropped for these recipes, or
# every process the tests start (xdist workers, CLI subprocesses, DDP ranks, Ray workers)
# compiles torch again (~3 s each: `import torch, numpy, scipy.stats` takes 5.1 s without
# bytecode, 2.2 s with).
PIP     = $(BIN)/python -m pip install -q --disable-pip-version-check --no-compile
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup demo test test-fast lint format bench clean browser

$(CORE): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e .
	touch $(CORE)

# The dev set-up installs the package with its extras in one step (not the core first, then
# again with the extras: each editable install builds the package, about 10 s), and so also
# stands for the core one.
$(DEV): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	touch $(CORE) $(DEV)

# The report's browser test needs Debian's chromium, the provenance tests openssl (a loopback
# timestamp authority): installed once, as root, from apt, where missing.
browser:
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium)
	command -v openssl >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq openssl)

setup: $(DEV)

demo: $(CORE)
	$(BIN)/nnmark demo

lint: setup
	$(BIN)/ruff check nnmark tests benchmarks
	$(BIN)/ruff format --check nnmark tests benchmarks
	$(BIN)/mypy nnmark
	$(BIN)/lint-imports

# Two pytest-xdist workers (the machine's two cores), a file per worker at a time: a module's
# fixtures are built once; models shared across files are trained once (tests/conftest.py `once`).
# The 20 slowest tests are listed at the end: the suite must stay well under 10 minutes.
# A third worker on two cores was slower (2026-12-04, one machine, the same commit, pytest
# `-n 3` against `-n 2` under /usr/bin/time: 627 s against 561 s, 1219 against 1078 CPU
# seconds): the CPU is already busy, and Ray's start crawls.
WORKERS ?= 2

test: lint browser
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile --no-loadscope-reorder --durations=20

# Everyday work: the tests that train nothing, serve nothing and drive no browser (tiers in
# tests/conftest.py); `make test` (CI) runs everything.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not browser and not distributed and not server"

format: setup
	$(BIN)/ruff format nnmark tests benchmarks
	$(BIN)/ruff check --fix nnmark tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
