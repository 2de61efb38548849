# seqserve serving image: onnxruntime, FastAPI and gRPC, never torch. See docs/deployment.md.
#
# GPU (default): onnxruntime-gpu 1.31.1 is built for CUDA 13.x and cuDNN 9.x and ships neither,
# so the base is NVIDIA's CUDA 13 runtime image with cuDNN 9 (Ubuntu 24.04, Python 3.12).
#   docker build -t seqserve:0.1.0-cuda .
# CPU: any Debian/Ubuntu base with Python >= 3.11 (or apt to install it), plain onnxruntime.
#   docker build --build-arg PROVIDER=cpu --build-arg BASE_IMAGE=debian:bookworm-slim -t seqserve:0.1.0-cpu .
ARG BASE_IMAGE=nvidia/cuda:13.2.0-cudnn-runtime-ubuntu24.04

FROM ${BASE_IMAGE} AS python-base
# The distribution's own Python, installed once here so the builder's venv and the runtime share
# one interpreter; skipped when the base already has it (e.g. a debootstrap base made with it).
# Versions come from the base's release, so they are not pinned here.
# hadolint ignore=DL3008
RUN if python3 -c "import ensurepip, venv" 2>/dev/null; then \
        echo "python3 with venv already in the base"; \
    else \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi

FROM python-base AS requirements
# cpu -> onnxruntime, cuda -> onnxruntime-gpu; exactly one may be installed (same module).
ARG PROVIDER=cuda
WORKDIR /build
COPY pyproject.toml deploy/docker/serving_requirements.py ./
RUN python3 serving_requirements.py --provider "${PROVIDER}" pyproject.toml > requirements.txt

FROM python-base AS builder
# Optional CA bundle path for builds behind a TLS-intercepting proxy (mounted, never copied).
ARG PIP_CA_BUNDLE=""
# Only requirements.txt reaches this stage, so edits elsewhere in pyproject.toml (dev extras,
# tool settings) reuse the large dependency layer below.
COPY --from=requirements /build/requirements.txt /build/requirements.txt
RUN python3 -m venv /opt/seqserve-venv \
    && /opt/seqserve-venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        ${PIP_CA_BUNDLE:+--cert "${PIP_CA_BUNDLE}"} --requirement /build/requirements.txt \
    && /opt/seqserve-venv/bin/pip uninstall --yes pip \
    && /opt/seqserve-venv/bin/python -c "import onnxruntime; print(onnxruntime.get_available_providers())"

FROM python-base AS runtime
ARG PROVIDER=cuda
LABEL org.opencontainers.image.title="seqserve" \
      org.opencontainers.image.description="Serving of neural sequence models with onnxruntime (REST + gRPC)"
# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /app --shell /usr/sbin/nologin seqserve
# SEQSERVE_WORKERS=N runs N worker processes under a supervisor, which stays PID 1 and forwards
# SIGTERM to each (docs/deployment.md#workers).
ENV PATH="/opt/seqserve-venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    SEQSERVE_PROVIDER=${PROVIDER} \
    SEQSERVE_MODELS_DIR=/app/exported_models \
    SEQSERVE_HTTP_HOST=0.0.0.0 \
    SEQSERVE_HTTP_PORT=8000 \
    SEQSERVE_GRPC_HOST=0.0.0.0 \
    SEQSERVE_GRPC_PORT=50051 \
    SEQSERVE_WORKERS=1
WORKDIR /app
EXPOSE 8000 50051
# Liveness only (/healthz): readiness is the orchestrator's job through /readyz. No curl needed.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SEQSERVE_HTTP_PORT', '8000') + '/healthz', timeout=4)"]
ENTRYPOINT ["python", "-m", "service"]
USER 10001:10001
# Everything above is cached; a source change rebuilds only the last COPY. The context is the
# .dockerignore allowlist (service/, protos/, exported_models/, pyproject.toml), copied with the
# repository's layout so `python -m service` and its default paths work as in a checkout.
# Files stay root-owned and read-only to the service user.
COPY --from=builder /opt/seqserve-venv /opt/seqserve-venv
COPY . /app/
