# Two commands do all the set-up on a fresh machine:
#   make demo   # install into .venv, train a small CNN on digits (cached) and search at 50% FLOPs
#   make test   # install into .venv with the test tools, lint, and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint lock bench bench-quick clean

# installs the exact versions of the lock file, constraints.txt (benchmarks record its hash)
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# re-resolve the lock after changing pyproject.toml's dependencies (pip's resolver in a scratch venv; no install)
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet --dry-run --ignore-installed --report .lock-venv/report.json -e '.[dev]'
	$(PYTHON) .ci/lock.py .lock-venv/report.json constraints.txt
	rm -rf .lock-venv

demo: $(STAMP)
	$(BIN)/autoprune demo

lint: $(STAMP)
	$(BIN)/ruff check .

# one pytest-xdist worker per core; the Ray modules (xdist_group "ray") share one worker, so two Ray instances never
# compete for ports and a test that kills a trial worker only sees its own
test: lint
	$(BIN)/python -m pytest -q -n auto --dist loadgroup

# the edit loop: everything but the tests marked slow (Ray clusters, kill-and-resume, compiles, the quick benchmark)
test-fast: lint
	$(BIN)/python -m pytest -q -n auto --dist loadgroup -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/run.py

bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
