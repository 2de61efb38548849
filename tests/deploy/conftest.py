"""Fixtures for the deployment validators: find a tool, render an overlay once per session."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.deploy.deploy_helpers import K8S_DIR, find_tool, run_tool


@pytest.fixture(scope="session")
def tool() -> Callable[[str], str]:
    """Return a finder that fails when a validator is missing (promtool outside CI: skips)."""

    def find(name: str) -> str:
        path = find_tool(name)
        if path is not None:
            return path
        if name == "promtool" and not os.environ.get("CI"):
            pytest.skip("promtool not installed (apt-get install prometheus); .ci/run installs it in CI")
        pytest.fail(f"{name} not found: run `make venv` (dev extra) or .ci/run (promtool)")

    return find


@pytest.fixture(scope="session")
def render_kustomization(tool: Callable[[str], str]) -> Callable[[Path], str]:
    """`kubectl kustomize DIR`, cached per directory: rendering is the slow part."""
    cache: dict[Path, str] = {}
    kubectl = tool("kubectl")

    def render(directory: Path) -> str:
        if directory not in cache:
            result = run_tool([kubectl, "kustomize", str(directory)])
            assert result.returncode == 0, result.stderr
            cache[directory] = result.stdout
        return cache[directory]

    return render


@pytest.fixture(scope="session")
def overlay_objects(render_kustomization: Callable[[Path], str]) -> Callable[[str], list[dict]]:
    """The rendered objects of deploy/k8s/overlays/NAME, parsed."""

    def objects(overlay: str) -> list[dict]:
        text = render_kustomization(K8S_DIR / "overlays" / overlay)
        return [document for document in yaml.safe_load_all(text) if document]

    return objects
