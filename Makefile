# Two commands do everything: `make run` (download, then analyse) and `make test`.
# Every target creates the virtual environment first when it is missing or out of date.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RESULTS := results
# Notebooks in reading order; `make run` executes them in this order.
NOTEBOOKS := 01_download_snowflakes 02_most_unique_snowflake 03_how_robust_is_uniqueness
NOTEBOOKS += 04_a_million_snowflakes 05_why_is_it_unique

.PHONY: setup run test lab bench lint format clean distclean
.PHONY: bench-scale

setup: $(STAMP)

# Reinstall whenever a requirements file changes.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $@

run: $(STAMP)
	mkdir -p $(RESULTS)
	cd notebooks && for nb in $(NOTEBOOKS); do \
		../$(BIN)/papermill --cwd . $$nb.ipynb ../$(RESULTS)/$$nb.ipynb || exit 1; \
	done
	@echo "Executed notebooks, figures and tables are in $(RESULTS)/"

test: $(STAMP)
	$(BIN)/python -m pytest

# The edit loop: everything but the tests marked slow (notebook runs, fidelity, benchmarks).
.PHONY: test-fast
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lab: $(STAMP)
	cd notebooks && ../$(BIN)/jupyter lab

# About 10 minutes on 2 cores; writes $(RESULTS)/bench.md and $(RESULTS)/bench.json.
bench: $(STAMP)
	mkdir -p $(RESULTS)
	$(BIN)/python benchmarks/run.py --out $(RESULTS)/bench.md

# Search at 10k, 100k and 1M synthetic rows, Ray Data extraction, and the sharded search on Ray:
# 1,000,000 rows on one node and on two (compared with the in-process path) and 10,000,000 rows
# (~20 GB of shards in a temporary folder, BENCH_TMP to choose where; it ran with 77 GB free). It
# takes hours on 2 cores, the 10,000,000-row case about 30 minutes of it (docs/performance.md).
# Only the sharded cases: scale_bench.py --only-sharded.
bench-scale: $(STAMP)
	mkdir -p $(RESULTS)
	$(BIN)/python benchmarks/scale_bench.py --out $(RESULTS)/bench_scale.md

lint: $(STAMP)
	$(BIN)/ruff check notebooks tests benchmarks
	$(BIN)/ruff format --check notebooks tests benchmarks
	$(BIN)/nbstripout --verify --keep-id notebooks/*.ipynb

format: $(STAMP)
	$(BIN)/ruff format notebooks tests benchmarks
	$(BIN)/ruff check --fix notebooks tests benchmarks
	$(BIN)/nbstripout --keep-id notebooks/*.ipynb

clean:
	rm -rf $(RESULTS) .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
