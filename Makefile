# The two commands of the README: `make study` and `make test`. Everything else is a helper target.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.geomxai-installed
DESIGN ?= quick
# Where `make study` writes: a git-ignored folder, so a new clone stays clean. The committed
# reports/ are regenerated only on purpose: make study REPORTS=reports
REPORTS ?= out/reports
RUNS    ?= out/runs
PYTEST_ARGS ?=
# Only the source folders that exist: ruff fails on a missing path.
LINT   := $(wildcard geomxai tests benchmarks analyses scripts)

.PHONY: study test lint format data browser lab bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch and torchvision first, pinned: this machine serves exactly these from disk.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,notebooks]'
	touch $(STAMP)

data:
	bash scripts/install_data.sh

browser:
	bash scripts/install_browser.sh

study: $(STAMP) data
	$(VENV)/bin/geomxai study $(DESIGN) --runs $(RUNS) --reports $(REPORTS)

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT)
	$(VENV)/bin/ruff format --check $(LINT)

format: $(STAMP)
	$(VENV)/bin/ruff check --fix $(LINT)
	$(VENV)/bin/ruff format $(LINT)

test: $(STAMP) data browser lint
	$(PY) -m pytest $(PYTEST_ARGS)

# Jupyter refuses to start as root (a container's usual user) unless told; only then is it told.
USER_ID ?= $(shell id -u)
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(USER_ID)),--allow-root)

bench: $(STAMP) data
	$(VENV)/bin/python -m pip install -q -e '.[bench]'
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
