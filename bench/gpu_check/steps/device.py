"""Is the requested provider really in use? Fail fast, before any figure is measured, if not.

`get_available_providers()` lists CUDA wherever the GPU wheel is installed, GPU or not, so each
committed model is opened as the service opens it (runtime.open_variant_session: the variant of the
provider really in use) and the session's providers are read back.
"""

from __future__ import annotations

from typing import Any

import onnxruntime as ort

from bench.gpu_check.models import exported_models
from bench.gpu_check.steps.context import StepContext, StepFailure
from service.engine.manifest import read_manifest
from service.engine.runtime import open_variant_session

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
        session = open_variant_session(read_manifest(folder), ctx.provider, ctx.threads)
        active = session.session.get_providers()
        result["models"][name] = {
            "file": session.model_path.name,
            "provider_in_use": session.provider,
            "active_providers": active,
            "input_types": sorted({i.type for i in session.session.get_inputs()}),
        }
        if session.provider != ctx.provider:
            raise StepFailure(
                f"{WANTED[ctx.provider]} is not active for {name} (session providers {active}): onnxruntime "
                "could not load CUDA 13 / cuDNN 9 (its log above says which library), or the GPU is unusable"
            )
        print(f"{name}: {session.model_path.name} on {active}", flush=True)
    return result
