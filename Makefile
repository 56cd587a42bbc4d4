PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/interpret-segmentation: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

demo: $(BIN)/interpret-segmentation
	$(BIN)/interpret-segmentation demo --strict

lint: $(BIN)/interpret-segmentation
	$(BIN)/ruff check src tests examples bench

test: lint
	$(BIN)/python -m pytest

bench: $(BIN)/interpret-segmentation
	$(BIN)/python bench/bench_perturbation.py
	$(BIN)/python bench/bench_lrp.py
	$(BIN)/python bench/bench_deepdream.py

clean:
	rm -rf $(VENV) out
