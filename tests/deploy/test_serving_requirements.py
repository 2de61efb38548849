"""The image installs the project's serving dependencies only, with the provider's onnxruntime wheel."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from types import ModuleType

import pytest

from tests.deploy.deploy_helpers import DEPLOY_DIR, REPO_ROOT

SCRIPT = DEPLOY_DIR / "docker" / "serving_requirements.py"


@pytest.fixture(scope="module")
def module() -> ModuleType:
    # deploy/ is no package: the builder stage runs this file on its own.
    spec = importlib.util.spec_from_file_location("serving_requirements", SCRIPT)
    assert spec and spec.loader
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    return {requirement.split("=")[0].split("<")[0].split(">")[0].strip() for requirement in requirements}


def test_cpu_requirements_are_exactly_the_core_dependencies(module: ModuleType, pyproject: dict) -> None:
    assert module.serving_requirements(pyproject, "cpu") == pyproject["project"]["dependencies"]


def test_cuda_swaps_onnxruntime_for_onnxruntime_gpu_at_the_same_pin(
    module: ModuleType, pyproject: dict
) -> None:
    cpu = module.serving_requirements(pyproject, "cpu")
    cuda = module.serving_requirements(pyproject, "cuda")
    (cpu_pin,) = [r for r in cpu if r.startswith("onnxruntime==")]
    assert f"onnxruntime-gpu{cpu_pin.removeprefix('onnxruntime')}" in cuda
    assert "onnxruntime" not in _names(cuda), "both wheels provide one module: only one may be installed"
    assert len(cuda) == len(cpu)


def test_training_extras_never_reach_the_image(module: ModuleType, pyproject: dict) -> None:
    training_only = _names(pyproject["project"]["optional-dependencies"]["train"]) - _names(
        pyproject["project"]["dependencies"]
    )
    for provider in ("cpu", "cuda"):
        installed = _names(module.serving_requirements(pyproject, provider))
        assert "torch" not in installed
        assert not installed & training_only


def test_unknown_provider_and_missing_onnxruntime_are_refused(module: ModuleType) -> None:
    with pytest.raises(ValueError, match="provider"):
        module.serving_requirements({"project": {"dependencies": ["onnxruntime==1"]}}, "rocm")
    with pytest.raises(ValueError, match="no onnxruntime"):
        module.serving_requirements({"project": {"dependencies": ["numpy"]}}, "cuda")


def test_cli_prints_one_requirement_per_line(pyproject: dict) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--provider", "cuda", str(REPO_ROOT / "pyproject.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert len(lines) == len(pyproject["project"]["dependencies"])
    assert any(line.startswith("onnxruntime-gpu==") for line in lines)


def test_the_proto_compiler_stays_out_of_serving_and_the_image(module: ModuleType, pyproject: dict) -> None:
    # The generated code is committed: serving never runs protoc, so neither the image's requirements
    # nor the folders it copies (service/, protos/) carry grpcio-tools or the generator.
    assert "grpcio-tools" in _names(pyproject["project"]["optional-dependencies"]["dev"])
    for provider in ("cpu", "cuda"):
        assert "grpcio-tools" not in _names(module.serving_requirements(pyproject, provider))
    shipped = [p for folder in ("service", "protos") for p in (REPO_ROOT / folder).rglob("*.py")]
    assert not [p for p in shipped if "grpc_tools" in p.read_text()], "a shipped module imports grpc_tools"
