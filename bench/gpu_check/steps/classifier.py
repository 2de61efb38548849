"""Classifier throughput through the service on the provider: bench/sentiment's one-text requests,
sequential and from many callers (the dynamic batcher's work), for each committed classifier."""

from __future__ import annotations

from typing import Any

from bench.gpu_check.models import exported_models
from bench.gpu_check.steps.context import StepContext
from bench.sentiment import measure
from harness.server_process import ServerProcess, linked_models


def run(ctx: StepContext) -> dict[str, Any]:
    classifiers = exported_models("classify")
    requests, concurrency = (40, 8) if ctx.quick else (2000, 64)
    models_dir = linked_models(ctx.work / "classifier", classifiers)
    server = ServerProcess(models_dir, ctx.work / "classifier-server.log", provider=ctx.provider)
    server.start_ready()
    results: dict[str, Any] = {"requests": requests, "concurrency": concurrency, "models": {}}
    try:
        for name in classifiers:
            figures = measure(server.url, name, requests, concurrency)
            results["models"][name] = figures
            print(
                f"{name}: {figures['sequential']['requests_per_s']:,.0f} req/s sequential, "
                f"{figures['concurrent']['requests_per_s']:,.0f} req/s from {concurrency} callers",
                flush=True,
            )
    finally:
        server.stop()
    return results
