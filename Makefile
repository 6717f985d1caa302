# Two commands do everything on a fresh machine (see README.md):
#   make demo   - the main job (set-up, then boost a model on real RetinaMNIST with the embedded LLM)
#   make test   - set-up, lint, then the test suite
PY := .venv/bin/python
SHARED ?= ../shared
MEDMNIST_ROOT ?= $(SHARED)/medmnist

.PHONY: venv demo test lint bench-p1 clean

venv:
	@bash tools/bootstrap.sh

demo: venv
	$(PY) examples/quickstart.py --data-root $(MEDMNIST_ROOT)

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest

bench-p1: venv
	$(PY) benchmarks/p1_load_layer.py

clean:
	rm -rf .venv build dist *.egg-info .pytest_cache .ruff_cache
