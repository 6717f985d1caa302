# Two commands do everything on a fresh machine (see README.md):
#   make demo   - the main job (set-up, then boost a model on real RetinaMNIST with the embedded LLM)
#   make test   - set-up, lint, then the test suite
PY := .venv/bin/python
SHARED ?= ../shared
MEDMNIST_ROOT ?= $(SHARED)/medmnist

.PHONY: venv demo test lint fault-table bench-p1 bench-p2p3 bench-p4 results-table zoo-release zoo-table clean

venv:
	@bash tools/bootstrap.sh

DEMO_RUN ?= runs/demo-retinamnist
DEMO_EPOCHS ?= 4

# main job: boost on real images, then train (val selects), evaluate on test once, package
demo: venv
	$(PY) examples/quickstart.py --data-root $(MEDMNIST_ROOT)
	$(PY) -m rllm_zoo train --flag retinamnist --data-root $(MEDMNIST_ROOT) --model rllm_vit_micro_patch4_28 \
		--llm smollm2 --epochs $(DEMO_EPOCHS) --out $(DEMO_RUN) --resume --package
	$(PY) -m rllm_zoo eval $(DEMO_RUN) --split test

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest

# run the fault-injection tests (marker fault) and write docs/reliability.md from their results
fault-table: venv
	$(PY) tools/fault_table.py

bench-p1: venv
	$(PY) benchmarks/p1_load_layer.py

bench-p2p3: venv
	$(PY) benchmarks/p2p3_speed.py --repeats 3

# one layer of a LLaMA-7B-shaped Hub model by range requests vs snapshot_download (~14 GB of temp disk)
bench-p4: venv
	$(PY) benchmarks/p4_hub_layer.py

# hours on 2 CPU cores; resumable: rerun to continue, committed results are kept
results-table: venv
	$(PY) benchmarks/results_table.py --data-root $(MEDMNIST_ROOT)

# the zoo's pretrained tags (best seed on val of each boosted arm) -> zoo/ and docs/pretrained.md
zoo-release: venv
	$(PY) benchmarks/zoo_release.py

zoo-table: venv
	$(PY) benchmarks/zoo_table.py

clean:
	rm -rf .venv build dist *.egg-info .pytest_cache .ruff_cache
