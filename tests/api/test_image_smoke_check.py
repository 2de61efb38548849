"""scripts/image_smoke_check.py, the checker scripts/image_smoke.sh runs against the container: every
check passes against a real server, and a python that cannot make the gRPC health check fails it
rather than skipping it (a skipped check once ended in PASSED)."""

from __future__ import annotations

import subprocess
import sys

from harness.server_process import REPO_ROOT, ServerProcess

CHECKER = REPO_ROOT / "scripts" / "image_smoke_check.py"


def test_the_checker_passes_every_check_against_a_real_server(server: ServerProcess) -> None:
    command = [
        sys.executable,
        str(CHECKER),
        "calls",
        "--base-url",
        server.url,
        "--grpc-target",
        server.grpc_target,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"gRPC health on {server.grpc_target}: SERVING" in done.stdout
    assert "POST /v1/completions" in done.stdout and "POST /v1/sentiment" in done.stdout


def test_the_grpc_check_alone_answers_serving(server: ServerProcess) -> None:
    """What image_smoke.sh runs with the image's own python when the host's has no grpcio."""
    command = [sys.executable, str(CHECKER), "grpc", "--grpc-target", server.grpc_target]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SERVING" in done.stdout


def test_a_python_without_grpcio_fails_the_grpc_check_instead_of_skipping_it() -> None:
    """As with a system python3: -S -I leaves out every site-packages, so only the stdlib is there."""
    command = [sys.executable, "-S", "-I", str(CHECKER), "grpc", "--grpc-target", "127.0.0.1:9"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot be checked" in done.stderr and "skipped" not in done.stdout + done.stderr
