# Two commands do everything on a fresh machine (see README.md):
#   make demo   - the main job (set-up, then boost a model on real RetinaMNIST with the embedded LLM)
#   make test   - set-up, lint, then the test suite
PY := .venv/bin/python
SHARED ?= ../shared
MEDMNIST_ROOT ?= $(SHARED)/medmnist

.PHONY: venv demo test lint conformance fault-table layer-sweep bench-p1 bench-p2p3 bench-p4 results-table zoo-release zoo-table clean

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

# timm's own tests/test_models.py (sdist of the installed timm, cached in .cache/conformance/) over the
# rllm_* models and one boosted model per plug-and-play family -> docs/conformance.md / .json
conformance: venv
	$(PY) tools/conformance/run.py

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

# which LLM layer boosts: benchmarks/sweeps/*.yaml (hours on 2 CPU cores; resumable: rerun to continue,
# committed runs are skipped). Two single-thread processes share each sweep folder (lock files).
SWEEP_PROCS ?= 2
layer-sweep: venv
	$(PY) -m rllm_zoo llms fetch gemma3-270m
	$(PY) -m rllm_zoo llms fetch qwen2.5-0.5b
	mkdir -p runs
	for flag in retinamnist adrenalmnist3d; do \
		for i in $$(seq $(SWEEP_PROCS)); do \
			OMP_NUM_THREADS=1 $(PY) -m rllm_zoo sweep --config benchmarks/sweeps/$$flag.yaml \
				--data-root $(MEDMNIST_ROOT) > runs/layer-sweep-$$flag-$$i.log 2>&1 & \
		done; wait; \
	done
	$(PY) benchmarks/results_table.py --collect-only

# the zoo's pretrained tags (best seed on val of each boosted arm) -> zoo/ and docs/pretrained.md
zoo-release: venv
	$(PY) benchmarks/zoo_release.py

zoo-table: venv
	$(PY) benchmarks/zoo_table.py

clean:
	rm -rf .venv build dist *.egg-info .pytest_cache .ruff_cache
