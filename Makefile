# Every target sets up its own virtual environment when none exists.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test lint train serve clean image-smoke bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[train,dev]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Rebuild every default model in exported_models/ from its recipe.
train: $(STAMP)
	$(PY) -m training build-defaults

serve:
	@echo "make serve arrives with the service API (issue 5); the engine is not served yet." && exit 1

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

# Build the CPU image from a local debootstrap base with podman, run it on 127.0.0.1 and check
# it serves (docs/deployment.md). Root only; caches in /var/tmp/seqserve-base.
image-smoke: $(STAMP)
	PYTHON=$(abspath $(PY)) bash scripts/image_smoke.sh

# Engine benchmark, quick mode (< 5 min): seqserve vs genai, Optimum, transformers and ORT without a
# KV cache on the same weights; writes bench/results/engine.{json,md} and PNG plots.
# Full run: $(PY) -m bench.engine (see --help for --model-dir and --rnn-dir).
bench: $(STAMP)
	$(PY) -m bench.engine --quick
