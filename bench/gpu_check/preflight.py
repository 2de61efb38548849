"""Is there a GPU that onnxruntime-gpu 1.31.1 can use? Asked before anything is installed.

Standard library only. The wheel is built for CUDA 13, whose runtime needs a driver that supports
CUDA 13 (R580 or newer); nvidia-smi prints the newest CUDA version its driver supports.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

REQUIRED_CUDA_MAJOR = 13
MIN_PYTHON = (3, 11)


def python_problem(version: tuple[int, int] = sys.version_info[:2]) -> str | None:
    if version < MIN_PYTHON:
        wanted = ".".join(map(str, MIN_PYTHON))
        return (
            f"Python {version[0]}.{version[1]} is too old: seqserve needs {wanted}+ "
            "(PYTHON=python3.12 make gpu-check)"
        )
    return None


def driver_cuda_version(smi_output: str) -> tuple[int, int] | None:
    """The `CUDA Version: 13.0` of nvidia-smi's banner, or None when it is not there."""
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", smi_output)
    return (int(match.group(1)), int(match.group(2))) if match else None


def gpu_names(smi_list_output: str) -> list[str]:
    """GPU names from `nvidia-smi -L` ("GPU 0: NVIDIA H200 (UUID: ...)")."""
    return [m.group(1).strip() for m in re.finditer(r"^GPU \d+: (.+?)(?: \(UUID.*)?$", smi_list_output, re.M)]


def gpu_problem() -> tuple[str | None, dict[str, object]]:
    """(why this machine cannot run the GPU check or None, what nvidia-smi said)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "no GPU: nvidia-smi is not on PATH (no NVIDIA driver on this machine)", {}
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
        banner = subprocess.run([smi], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no GPU: nvidia-smi failed ({exc})", {}
    names = gpu_names(listed.stdout)
    facts: dict[str, object] = {"gpus": names, "driver_cuda": driver_cuda_version(banner.stdout)}
    if listed.returncode != 0 or not names:
        detail = (listed.stdout + listed.stderr).strip()[-300:]
        return f"no GPU: nvidia-smi -L lists none ({detail or 'no output'})", facts
    cuda = facts["driver_cuda"]
    if cuda is not None and cuda[0] < REQUIRED_CUDA_MAJOR:
        return (
            f"the driver supports CUDA {cuda[0]}.{cuda[1]}, but onnxruntime-gpu 1.31.1 needs CUDA "
            f"{REQUIRED_CUDA_MAJOR}.x (driver R580 or newer)",
            facts,
        )
    return None, facts
