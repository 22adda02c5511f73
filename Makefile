# Two commands on a fresh clone:
#   make demo   set up .venv and fine-tune MiniLM on the bundled sample data
#   make test   set up .venv with the dev extras and run the whole test suite (fast + slow tiers, 2 workers)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
# Two pytest-xdist workers (CI has 2 cores; tests/conftest.py gives each worker one thread). loadgroup without
# reordering hands out one test at a time in the order tests/conftest.py sets: slow tests first, longest
# first, then the fast tier. JOBS=0 runs serially.
JOBS   ?= 2
XDIST  := -n $(JOBS) --dist loadgroup --no-loadscope-reorder

.PHONY: demo test test-fast lint bench clean

# torch first (the CPU wheel), so that nothing resolves a bare `torch` to the multi-GB CUDA build.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.torch: $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	touch $@

$(VENV)/.installed: $(VENV)/.torch pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/taskhead train examples/news/config.yaml --overwrite
	$(BIN)/taskhead predict runs/news-minilm examples/news/predict.txt

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q --timeout=1500 $(XDIST)

test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -m "not slow" $(XDIST)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks examples tools
	$(BIN)/ruff format --check src tests benchmarks examples tools
	$(BIN)/mypy src

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
