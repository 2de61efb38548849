# Every target sets up its own virtual environment when none exists.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test lint train train-ddp-smoke serve clean image-smoke bench soak perf ceiling clients-venv gpu-check gpu-check-dry

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

# Data-parallel check: a tiny recipe trained 20 steps by 2 ranks under torchrun (gloo on CPU) and by
# 1 process at the same global batch; prints both final losses, their relative difference (fails
# above 1e-4) and each run's seconds per step. `make test` runs it too (tests/training/test_torchrun.py).
train-ddp-smoke: $(STAMP)
	$(PY) -m training ddp-smoke

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
	rm -rf $(VENV) .venv-clients .venv-gpu runs .pytest_cache .ruff_cache

# Build the CPU image from a local debootstrap base with podman, run it on 127.0.0.1 and check
# it serves (docs/deployment.md). Root only; caches in /var/tmp/seqserve-base.
image-smoke: $(STAMP)
	PYTHON=$(abspath $(PY)) bash scripts/image_smoke.sh

# Engine benchmark, quick mode (< 5 min): seqserve vs genai, Optimum, transformers and ORT without a
# KV cache on the same weights (the peers' HF checkpoint is rebuilt from the committed ONNX); a quick
# run goes to bench/results/tmp/unpublished/. Only the full run, $(PY) -m bench.engine, with every
# peer measured, replaces bench/results/engine.{json,md}; a peer that fails makes it exit non-zero.
# Then the ceiling's headline rows.
bench: $(STAMP)
	$(PY) -m bench.engine --quick
	$(PY) -m bench.ceiling --quick

# Ceiling benchmark: the service exactly as `make serve` starts it beside the in-process engine built
# with the same settings, on the same workload (tiny llama fixture, shakespeare-gpt, shakespeare-lstm;
# 1-128 streams over REST SSE, OpenAI SSE, REST unary, gRPC stream; one-token requests/s; 1,000
# simultaneous completions against a full server); writes bench/results/ceiling.{json,md}.
# Subsets and a tuned column beside the default: make ceiling CEILING_ARGS="--quick" or e.g.
# CEILING_ARGS="--models shakespeare-gpt --streams 64 --tuned SEQSERVE_INTRA_OP_THREADS=1".
CEILING_ARGS ?=
ceiling: $(STAMP)
	$(PY) -m bench.ceiling $(CEILING_ARGS)

# The whole performance report: the ceiling benchmark, then sentiment at 64 callers vs sequential
# (bench/results/sentiment.{json,md}).
perf: ceiling
	$(PY) -m bench.sentiment

# Reliability soak (issue #7, docs/reliability.md): R1-R6 at full counts on exported_models/, each
# against a real server on 127.0.0.1; figures go to bench/results/reliability/*.json.
# `make test` runs the same scenarios small (tests/system).
soak: $(STAMP)
	SEQSERVE_SOAK=1 $(PY) -m pytest -q -p no:cacheprovider --timeout 1800 tests/system

# GPU check (issue 13, docs/deployment.md#gpu-check): on a machine with an NVIDIA GPU, under 10 minutes.
# Runs with the system python3 (standard library only): stops at once, installing nothing, when there
# is no GPU; else builds .venv-gpu (onnxruntime-gpu, onnxruntime-genai-cuda; GPU_CHECK_ARGS="--wheelhouse
# DIR" without PyPI), measures placement, copies, parity, engine vs genai, the service ceiling and the
# classifiers, and writes bench/results/gpu.{json,md}.
GPU_CHECK_ARGS ?=
gpu-check:
	$(PYTHON) -m bench.gpu_check $(GPU_CHECK_ARGS)

# The same pipeline on the CPU at tiny sizes (about 30 s): proves the logic, measures nothing;
# writes bench/results/tmp/gpu-dry/gpu.{json,md}.
gpu-check-dry: $(STAMP)
	$(PY) -m bench.gpu_check --provider cpu --quick
