"""The GPU check's own venv (.venv-gpu): onnxruntime-gpu instead of onnxruntime, genai's CUDA build,
and the project, all pinned in pyproject.toml. Standard library only (it runs before the venv exists).

Why a venv of its own: onnxruntime and onnxruntime-gpu provide the same `onnxruntime` module, so the
GPU wheel cannot sit beside the CPU one of the project's other venvs. The wheel ships no CUDA
libraries; when the machine lacks CUDA 13 / cuDNN 9 they come from PyPI through the wheel's own
`cuda` and `cudnn` extras (NVIDIA's nvidia-* wheels), and LD_LIBRARY_PATH points the steps and the
servers they start at them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO_ROOT / ".venv-gpu"
EXTRA = "gpu-check"  # pyproject.toml's extra with the check's own pins (genai-cuda, onnx, clients)
# What libonnxruntime_providers_cuda.so and cuDNN load (readelf -d of the 1.31.1 wheel, plus cuDNN).
CUDA_LIBRARIES = (
    "libcudart.so.13",
    "libcublas.so.13",
    "libcublasLt.so.13",
    "libcurand.so.10",
    "libcufft.so.12",
    "libcudnn.so.9",
)


def _serving_requirements(pyproject: dict, provider: str) -> list[str]:
    """deploy/docker/serving_requirements.py's swap of onnxruntime for onnxruntime-gpu at the same pin."""
    path = REPO_ROOT / "deploy" / "docker" / "serving_requirements.py"
    spec = importlib.util.spec_from_file_location("serving_requirements", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.serving_requirements(pyproject, provider)


def missing_cuda_libraries(ldconfig_output: str, library_path: str = "") -> list[str]:
    """The CUDA libraries neither the loader cache nor LD_LIBRARY_PATH holds."""
    dirs = [Path(d) for d in library_path.split(os.pathsep) if d]
    return [
        lib
        for lib in CUDA_LIBRARIES
        if lib not in ldconfig_output and not any((d / lib).exists() for d in dirs)
    ]


def system_cuda_missing() -> list[str]:
    try:
        cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        cache = ""
    return missing_cuda_libraries(cache, os.environ.get("LD_LIBRARY_PATH", ""))


def requirements(with_cuda_wheels: bool) -> list[str]:
    """Serving deps (onnxruntime-gpu) + the gpu-check extra; the CUDA wheels only when needed."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    serving = _serving_requirements(pyproject, "cuda")
    if with_cuda_wheels:
        serving = [
            r.replace("onnxruntime-gpu", "onnxruntime-gpu[cuda,cudnn]", 1)
            if r.startswith("onnxruntime-gpu")
            else r
            for r in serving
        ]
    return serving + list(pyproject["project"]["optional-dependencies"][EXTRA])


def index_problem(timeout_s: float = 10.0) -> str | None:
    """Why pip could not reach its package index, or None. Asked before pip, which would otherwise
    retry for minutes on a machine with no network before it fails."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    try:
        with urllib.request.urlopen(f"{index}/onnxruntime-gpu/", timeout=timeout_s) as response:
            response.read(1)
    except (OSError, ValueError) as exc:
        return (
            f"cannot reach the package index {index} ({exc}): give --wheelhouse DIR (the wheels of "
            "`python3 -m bench.gpu_check --print-requirements`, fetched with `pip download -d DIR` on a "
            "machine with PyPI and the same Python and platform) or --no-install with a python that "
            "already has onnxruntime-gpu"
        )
    return None


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(venv: Path, wheelhouse: Path | None, timeout_s: float, log) -> Path:
    """Create and fill `venv` unless its stamp says it holds these exact requirements; returns its python.

    `wheelhouse`: install from that folder only (a machine without PyPI), else from PyPI.
    """
    missing = system_cuda_missing()
    wanted = requirements(with_cuda_wheels=bool(missing))
    digest = hashlib.sha256("\n".join(wanted).encode()).hexdigest()
    stamp = venv / ".installed"
    python = venv_python(venv)
    if stamp.exists() and stamp.read_text().strip() == digest and python.exists():
        log(f"venv {venv} is up to date")
        return python
    if wheelhouse is None:
        problem = index_problem()
        if problem:
            raise OSError(problem)
    log(
        f"installing into {venv}: onnxruntime-gpu, onnxruntime-genai-cuda and the serving dependencies"
        + (f" (with NVIDIA's CUDA wheels: this machine lacks {', '.join(missing)})" if missing else "")
    )
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    source = ["--no-index", "--find-links", str(wheelhouse)] if wheelhouse else []
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--retries", "2"]
    pip += source
    # The project's dependencies only: the steps and the servers run from the repository root, which
    # puts the checkout's `service` and `bench` on the path, and installing the project itself would
    # bring the CPU onnxruntime back through its own dependency list.
    subprocess.run([*pip, *wanted], check=True, timeout=timeout_s)
    stamp.write_text(digest + "\n")
    return python


def library_path(venv: Path) -> str:
    """LD_LIBRARY_PATH with the venv's nvidia-* wheel libraries first (a process reads it at start)."""
    dirs = sorted({str(p.parent) for p in venv.glob("lib/python3*/site-packages/nvidia/**/lib*.so*")})
    current = os.environ.get("LD_LIBRARY_PATH", "")
    return os.pathsep.join([*dirs, *([current] if current else [])])
