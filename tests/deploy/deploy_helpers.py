"""Plain helpers for the deployment validators: where things are, and how to run a real tool.

The tools come from the dev extra (yamllint, kubectl, kubernetes-validate, hadolint: in the venv's
bin/, which is not always on PATH) or from Debian (promtool, installed by .ci/run). Nothing is
fetched at run time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"
K8S_DIR = DEPLOY_DIR / "k8s"
PROMETHEUS_DIR = DEPLOY_DIR / "prometheus"
OVERLAYS = ("cpu", "gpu")
# The newest Kubernetes release whose schemas the pinned kubernetes-validate wheel ships.
KUBERNETES_VERSION = "1.37.0"
TOOL_TIMEOUT_S = 120


def find_tool(name: str) -> str | None:
    """The venv's own copy first (dev extra), then PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which(name)


def run_tool(args: list[str], cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """Run a validator and capture its output; the caller asserts on the exit code."""
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)


def only(objects: list[dict], kind: str) -> dict:
    """The one object of a kind; several or none is a manifest error worth its own message."""
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]
