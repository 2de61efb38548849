"""Build (once) the virtual environment of the stock OIP clients from tests/clients/requirements.txt.

`python -m tests.clients.client_venv` builds it (`make clients-venv` calls that); the client tests'
session fixture calls `ensure()`. It is rebuilt only when the requirements file changes: a stamp in the
venv holds the file's sha256. The path is git-ignored (.venv-clients at the repository root).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = Path(__file__).with_name("requirements.txt")
VENV = Path(os.environ.get("SEQSERVE_CLIENTS_VENV", REPO_ROOT / ".venv-clients"))
INSTALL_TIMEOUT_S = 900


def python() -> Path:
    return VENV / "bin" / "python"


def _digest() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def ensure() -> Path:
    """The venv's python, after building the venv if it is missing or stale."""
    stamp = VENV / ".requirements.sha256"
    if python().exists() and stamp.exists() and stamp.read_text() == _digest():
        return python()
    if VENV.exists():
        shutil.rmtree(VENV)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
    subprocess.run(
        [
            str(python()),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(REQUIREMENTS),
        ],
        check=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    stamp.write_text(_digest())
    return python()


if __name__ == "__main__":
    print(ensure())
