"""The Dockerfile passes hadolint and builds the image the deployment expects."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tests.deploy.deploy_helpers import REPO_ROOT, run_tool

pytestmark = pytest.mark.timeout(120)

DOCKERFILE = REPO_ROOT / "Dockerfile"


def _instructions(keyword: str) -> list[str]:
    """Arguments of every KEYWORD instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [line.split(None, 1)[1] for line in text.splitlines() if line.startswith(keyword + " ")]


def test_dockerfile_passes_hadolint(tool: Callable[[str], str]) -> None:
    result = run_tool([tool("hadolint"), str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_base_is_a_cuda_13_runtime_with_cudnn_9() -> None:
    # onnxruntime-gpu 1.31.1 needs CUDA 13.x and cuDNN 9.x; NVIDIA's "cudnn" tags carry cuDNN 9.
    (base,) = [arg for arg in _instructions("ARG") if arg.startswith("BASE_IMAGE=")]
    assert re.fullmatch(r"BASE_IMAGE=nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base)


def test_image_runs_python_m_service_as_a_numeric_non_root_user() -> None:
    assert _instructions("ENTRYPOINT")[-1] == '["python", "-m", "service"]'
    user = _instructions("USER")[-1]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), "numeric, so runAsNonRoot can verify it"


def test_image_binds_all_interfaces_and_checks_healthz_without_curl() -> None:
    env = " ".join(_instructions("ENV"))
    assert "SEQSERVE_HTTP_HOST=0.0.0.0" in env and "SEQSERVE_GRPC_HOST=0.0.0.0" in env
    (healthcheck,) = _instructions("HEALTHCHECK")
    assert "/healthz" in healthcheck and "urllib" in healthcheck and "curl" not in healthcheck


def test_every_stage_builds_from_the_base_image_argument() -> None:
    # One base for builder and runtime: the venv is copied between them and must find its Python.
    bases = [source.split()[0] for source in _instructions("FROM")]
    assert bases[0] == "${BASE_IMAGE}"
    assert all(base in {"${BASE_IMAGE}", "python-base"} for base in bases)
