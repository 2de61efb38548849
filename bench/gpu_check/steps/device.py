"""Is the requested provider really in use? Fail fast, before any figure is measured, if not.

`get_available_providers()` lists CUDA wherever the GPU wheel is installed, GPU or not, so each
committed model's variant is opened as the service opens it and `get_providers()` is read back.
"""

from __future__ import annotations

from typing import Any

import onnxruntime as ort

from bench.gpu_check.steps.context import StepContext, StepFailure
from bench.gpu_check.variants import exported_models, variant_file

WANTED = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def run(ctx: StepContext) -> dict[str, Any]:
    result: dict[str, Any] = {
        "onnxruntime": ort.__version__,
        "device": ort.get_device(),
        "available_providers": ort.get_available_providers(),
        "models": {},
    }
    if WANTED[ctx.provider] not in result["available_providers"]:
        raise StepFailure(
            f"{WANTED[ctx.provider]} is not in this onnxruntime ({ort.__version__}, providers "
            f"{result['available_providers']}): is onnxruntime-gpu installed instead of onnxruntime?"
        )
    for name, folder in exported_models().items():
        path, source = variant_file(folder, ctx.provider)
        session = ort.InferenceSession(str(path), providers=ctx.ort_providers)
        active = session.get_providers()
        result["models"][name] = {
            "file": path.name,
            "chosen_by": source,
            "active_providers": active,
            "inputs": {i.name: i.type for i in session.get_inputs()},
        }
        if active[0] != WANTED[ctx.provider]:
            raise StepFailure(
                f"{WANTED[ctx.provider]} is not active for {name} (session providers {active}): onnxruntime "
                "could not load CUDA 13 / cuDNN 9 (its log above says which library), or the GPU is unusable"
            )
        print(f"{name}: {path.name} ({source}) on {active}", flush=True)
    return result
