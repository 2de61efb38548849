#!/usr/bin/env bash
# Image smoke test (make image-smoke): build the CPU image from a local Debian base, run it on
# 127.0.0.1 the way Kubernetes runs it (read-only root, no capabilities, non-root), check
# /readyz, one generation, one sentiment call, /metrics and gRPC health, then stop it with SIGTERM and expect
# exit 0 (the drain). Needs root, podman, runc and debootstrap (apt-get update && apt-get install -y
# podman buildah runc debootstrap). No registry is pulled from: the base is made here with debootstrap.
# Nothing is skipped: gRPC health runs with $PYTHON when it has grpcio-health-checking, else with the
# image's own python inside the container; the verdict names every check that passed.
#
#   scripts/image_smoke.sh               base (once), build, run, check, stop
#   scripts/image_smoke.sh --build-only  base (once) and build
#   scripts/image_smoke.sh --run-only    run, check and stop the image built last time
#
# Caches live outside the repository, in SEQSERVE_SMOKE_DIR (default /var/tmp/seqserve-base):
# the debootstrap root file system and podman's vfs storage (base image and build layers).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SMOKE_DIR=${SEQSERVE_SMOKE_DIR:-/var/tmp/seqserve-base}
DEBIAN_MIRROR=${SEQSERVE_SMOKE_MIRROR:-http://deb.debian.org/debian}
BASE_IMAGE=localhost/seqserve-base:bookworm
IMAGE=${SEQSERVE_SMOKE_IMAGE:-localhost/seqserve:smoke-cpu}
HTTP_PORT=${SEQSERVE_SMOKE_HTTP_PORT:-18000}
GRPC_PORT=${SEQSERVE_SMOKE_GRPC_PORT:-15051}
READY_TIMEOUT_S=${SEQSERVE_SMOKE_READY_TIMEOUT_S:-300}
PYTHON=${PYTHON:-python3}
# Optional host folder of model artifacts mounted over the image's /app/exported_models.
MODELS_DIR=${SEQSERVE_SMOKE_MODELS_DIR:-}
# The host's CA bundle lets pip inside the build reach PyPI behind a TLS-intercepting proxy.
CA_BUNDLE=${SEQSERVE_SMOKE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
CONTAINER=seqserve-smoke-$$
PASSED_CHECKS=()  # named in the verdict, in the order they passed

# vfs and runc: overlay and crun do not work in this kind of sandbox; the ulimits must be explicit.
PODMAN=(podman --storage-driver vfs --root "$SMOKE_DIR/storage" --runroot "$SMOKE_DIR/run")
RUN_LIMITS=(--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

# podman without systemd logs "unable to get systemd connection" for the HEALTHCHECK timer: noise.
podman_quiet() { "${PODMAN[@]}" "$@" 2> >(grep -v 'unable to get systemd connection' >&2); }

log() { printf '[image-smoke %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { log "FAILED: $*"; exit 1; }

require_tools() {
    local tool missing=()
    for tool in podman runc debootstrap "$PYTHON"; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    ((${#missing[@]} == 0)) \
        || die "missing ${missing[*]} (apt-get update && apt-get install -y podman buildah runc debootstrap python3)"
    [[ $(id -u) == 0 ]] || die "run as root (debootstrap and podman's vfs storage here need it)"
}

# Debian bookworm minbase with Python 3.11 and venv included, so the build needs no apt.
make_base_image() {
    if "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
        log "base $BASE_IMAGE present (delete $SMOKE_DIR to rebuild it)"
        return
    fi
    local rootfs=$SMOKE_DIR/rootfs
    if [[ ! -x $rootfs/usr/bin/python3 ]]; then
        log "debootstrap bookworm minbase into $rootfs"
        rm -rf "$rootfs.partial"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$rootfs.partial" "$DEBIAN_MIRROR" >"$SMOKE_DIR/debootstrap.log" 2>&1 \
            || die "debootstrap failed, see $SMOKE_DIR/debootstrap.log"
        rm -rf "$rootfs.partial"/var/cache/apt/archives/*.deb "$rootfs.partial"/var/lib/apt/lists/*
        mv "$rootfs.partial" "$rootfs"
    fi
    log "podman import $rootfs as $BASE_IMAGE"
    tar -C "$rootfs" -c . | "${PODMAN[@]}" import - "$BASE_IMAGE" >/dev/null
}

build_image() {
    local ca_args=()
    if [[ -r $CA_BUNDLE ]]; then
        ca_args=(--volume "$CA_BUNDLE:/run/build-ca-bundle.crt:ro" --build-arg PIP_CA_BUNDLE=/run/build-ca-bundle.crt)
    fi
    log "build $IMAGE (PROVIDER=cpu, BASE_IMAGE=$BASE_IMAGE)"
    local started=$SECONDS
    # nice: the machine is shared; the build is throughput work, not latency work.
    nice -n 10 "${PODMAN[@]}" build --pull=never --isolation chroot --format docker --layers \
        --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg PROVIDER=cpu "${ca_args[@]}" \
        --tag "$IMAGE" --file "$ROOT/Dockerfile" "$ROOT"
    log "build took $((SECONDS - started))s; image size $("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE") bytes"
}

cleanup() {
    "${PODMAN[@]}" rm --force --ignore "$CONTAINER" >/dev/null 2>&1 || true
}

show_logs_and_die() {
    "${PODMAN[@]}" logs --tail 60 "$CONTAINER" 2>&1 | sed 's/^/    container| /' || true
    die "$*"
}

# The flags mirror the Kubernetes securityContext of deploy/k8s/base/deployment.yaml.
run_and_check() {
    trap cleanup EXIT
    log "run $CONTAINER on 127.0.0.1:$HTTP_PORT (REST) and 127.0.0.1:$GRPC_PORT (gRPC)"
    local models_args=()
    if [[ -n $MODELS_DIR ]]; then
        log "models: $MODELS_DIR mounted read-only over /app/exported_models"
        models_args=(--volume "$(realpath "$MODELS_DIR"):/app/exported_models:ro")
    fi
    local started=$SECONDS
    podman_quiet run --detach --name "$CONTAINER" "${RUN_LIMITS[@]}" --network host \
        --read-only --tmpfs /tmp:rw,size=64m --cap-drop ALL --security-opt no-new-privileges \
        --env SEQSERVE_HTTP_HOST=127.0.0.1 --env SEQSERVE_HTTP_PORT="$HTTP_PORT" \
        --env SEQSERVE_GRPC_HOST=127.0.0.1 --env SEQSERVE_GRPC_PORT="$GRPC_PORT" \
        --env SEQSERVE_INTRA_OP_THREADS=1 "${models_args[@]}" \
        "$IMAGE" >/dev/null
    local base_url=http://127.0.0.1:$HTTP_PORT state
    until "$PYTHON" "$ROOT/scripts/image_smoke_check.py" ready --base-url "$base_url"; do
        state=$("${PODMAN[@]}" container inspect --format '{{.State.Status}}' "$CONTAINER")
        [[ $state == running ]] || show_logs_and_die "container is $state before /readyz answered 200"
        ((SECONDS - started < READY_TIMEOUT_S)) || show_logs_and_die "/readyz not 200 after ${READY_TIMEOUT_S}s"
        sleep 1
    done
    log "ready after $((SECONDS - started))s"
    PASSED_CHECKS+=("/readyz")
    # The image's HEALTHCHECK, run once by hand (its timer needs systemd).
    "${PODMAN[@]}" healthcheck run "$CONTAINER" >/dev/null || show_logs_and_die "HEALTHCHECK failed"
    log "HEALTHCHECK (python urllib against /healthz) passed"
    PASSED_CHECKS+=("HEALTHCHECK")
    # gRPC health with $PYTHON when it can; a python without grpcio (a system python3) hands the
    # check to the image's own python, which has it: never a skipped check.
    local grpc_args=() grpc_where="$PYTHON"
    if "$PYTHON" -c "import grpc_health.v1" 2>/dev/null; then
        grpc_args=(--grpc-target "127.0.0.1:$GRPC_PORT")
    fi
    "$PYTHON" "$ROOT/scripts/image_smoke_check.py" calls --base-url "$base_url" "${grpc_args[@]}" \
        || show_logs_and_die "API checks failed"
    PASSED_CHECKS+=("/v1/models, completion, sentiment, /metrics")
    if ((${#grpc_args[@]} == 0)); then
        log "$PYTHON has no grpcio-health-checking: gRPC health runs with the image's python in the container"
        grpc_where="the image's python"
        "${PODMAN[@]}" exec -i "$CONTAINER" python - grpc --grpc-target "127.0.0.1:$GRPC_PORT" \
            <"$ROOT/scripts/image_smoke_check.py" || show_logs_and_die "gRPC health check failed"
    fi
    PASSED_CHECKS+=("gRPC health (checked by $grpc_where)")

    log "SIGTERM: expecting a drain and exit 0"
    started=$SECONDS
    podman_quiet stop --time 40 "$CONTAINER" >/dev/null
    local exit_code
    exit_code=$("${PODMAN[@]}" container inspect --format '{{.State.ExitCode}}' "$CONTAINER")
    [[ $exit_code == 0 ]] || show_logs_and_die "exit code $exit_code after SIGTERM (expected 0)"
    log "stopped in $((SECONDS - started))s with exit code 0"
    PASSED_CHECKS+=("drain to exit 0 on SIGTERM")
}

main() {
    local mode=${1:-all}
    [[ $mode == all || $mode == --build-only || $mode == --run-only ]] || die "usage: $0 [--build-only|--run-only]"
    require_tools
    mkdir -p "$SMOKE_DIR"
    local started=$SECONDS
    if [[ $mode != --run-only ]]; then
        make_base_image
        build_image
    fi
    if [[ $mode != --build-only ]]; then
        run_and_check
    fi
    if [[ $mode == --build-only ]]; then
        log "PASSED in $((SECONDS - started))s: image built (nothing run: --build-only)"
    else
        local joined
        joined=$(printf '%s; ' "${PASSED_CHECKS[@]}")
        log "PASSED in $((SECONDS - started))s: ${joined%; }"
    fi
}

main "$@"
