"""Every YAML file of the repository passes yamllint with the repository's .yamllint."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from tests.deploy.deploy_helpers import REPO_ROOT, run_tool

pytestmark = pytest.mark.timeout(120)


def _repository_yaml_files() -> list[str]:
    """YAML files git sees (tracked, or new and not ignored): never a venv's or a cache's."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    return sorted(
        path
        for path in listed.split("\0")
        if path.endswith((".yaml", ".yml")) or path == ".yamllint"
        if (REPO_ROOT / path).is_file()
    )


def test_repository_yaml_passes_yamllint_strict(tool: Callable[[str], str]) -> None:
    files = _repository_yaml_files()
    assert "deploy/k8s/base/deployment.yaml" in files and ".yamllint" in files
    config = str(REPO_ROOT / ".yamllint")
    result = run_tool([tool("yamllint"), "--strict", "--config-file", config, "--format", "parsable", *files])
    assert result.returncode == 0, result.stdout + result.stderr
