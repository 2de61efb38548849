# Every target sets up its own virtual environment when none exists.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test lint train serve clean image-smoke bench soak perf clients-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[train,dev]'
	touch $(STAMP)

venv: $(STAMP)

# The stock Open Inference Protocol clients (tritonclient, kserve) in their own venv, .venv-clients:
# they need protobuf<7, the service protobuf 7. `make test` builds it on first use (tests/clients).
clients-venv: $(STAMP)
	$(PY) -m tests.clients.client_venv

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Rebuild every default model in exported_models/ from its recipe.
train: $(STAMP)
	$(PY) -m training build-defaults

# Serve exported_models/ over REST and gRPC. A fresh machine gets a venv with the serving
# dependencies only (no torch); override any SEQSERVE_* setting on the command line or in the
# environment, e.g. `make serve SEQSERVE_HTTP_PORT=9000` (docs/api.md lists them).
SERVE_STAMP := $(VENV)/.installed-serve
SEQSERVE_HTTP_HOST ?= 127.0.0.1
SEQSERVE_HTTP_PORT ?= 8000
SEQSERVE_GRPC_HOST ?= 127.0.0.1
SEQSERVE_GRPC_PORT ?= 50051
SEQSERVE_MODELS_DIR ?= exported_models

$(SERVE_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(SERVE_STAMP)

serve: $(SERVE_STAMP)
	SEQSERVE_HTTP_HOST=$(SEQSERVE_HTTP_HOST) SEQSERVE_HTTP_PORT=$(SEQSERVE_HTTP_PORT) \
	SEQSERVE_GRPC_HOST=$(SEQSERVE_GRPC_HOST) SEQSERVE_GRPC_PORT=$(SEQSERVE_GRPC_PORT) \
	SEQSERVE_MODELS_DIR=$(SEQSERVE_MODELS_DIR) exec $(PY) -m service

clean:
	rm -rf $(VENV) .venv-clients runs .pytest_cache .ruff_cache

# Build the CPU image from a local debootstrap base with podman, run it on 127.0.0.1 and check
# it serves (docs/deployment.md). Root only; caches in /var/tmp/seqserve-base.
image-smoke: $(STAMP)
	PYTHON=$(abspath $(PY)) bash scripts/image_smoke.sh

# Engine benchmark, quick mode (< 5 min): seqserve vs genai, Optimum, transformers and ORT without a
# KV cache on the same weights; writes bench/results/engine.{json,md} and PNG plots.
# Full run: $(PY) -m bench.engine (see --help for --model-dir and --rnn-dir).
bench: $(STAMP)
	$(PY) -m bench.engine --quick
	$(PY) -m bench.perf

# Issue #7 performance report alone: service (REST SSE, gRPC) vs in-process engine at 1/8/32/64 streams
# and sentiment at 64 callers vs sequential; writes bench/results/perf.{json,md} and perf_*.png.
perf: $(STAMP)
	$(PY) -m bench.perf

# Reliability soak (issue #7, docs/reliability.md): R1-R6 at full counts on exported_models/, each
# against a real server on 127.0.0.1; figures go to bench/results/reliability/*.json.
# `make test` runs the same scenarios small (tests/system).
soak: $(STAMP)
	SEQSERVE_SOAK=1 $(PY) -m pytest -q -p no:cacheprovider --timeout 1800 tests/system
