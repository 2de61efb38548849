"""The service's ceiling on the provider: `python -m service` (started as `make serve` starts it, with
SEQSERVE_PROVIDER set) beside the in-process engine built with the same settings, through REST SSE
and gRPC streams, with bench/ceiling's own workload, rounds and summaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.ceiling.__main__ import measure_model, parse_args
from bench.gpu_check.models import EXPORTED
from bench.gpu_check.steps.context import StepContext
from harness.server_process import ServerProcess, linked_models
from service.settings import Settings

MODEL = "shakespeare-gpt"
PROTOCOLS = ("rest_sse", "grpc_stream")
STREAMS = 64  # issue 13's target: service / engine >= 0.8 at 64 streams


def run(ctx: StepContext) -> dict[str, Any]:
    streams = ["1", "4"] if ctx.quick else ["1", str(STREAMS)]
    args = parse_args(
        [
            "--models", MODEL, "--serve-chosen-only", "--streams", *streams,
            "--protocols", *PROTOCOLS, "--rps-protocols", "--burst", "0",
            "--tokens", "8" if ctx.quick else "128", "--repeats", "1" if ctx.quick else "2",
        ]
    )  # fmt: skip
    folder = EXPORTED / MODEL
    models_dir = linked_models(ctx.work / "ceiling", {MODEL: folder})
    server = ServerProcess(models_dir, ctx.work / "ceiling-server.log", provider=ctx.provider)
    server.start_ready()
    try:
        figures = measure_model(args, server, MODEL, folder, Settings(provider=ctx.provider))
    finally:
        code = server.stop()
        if code not in (0, None):
            print(f"server exited {code}:\n{Path(server.log_path).read_text()[-3000:]}", flush=True)
    top = streams[-1]
    row = figures["streams"][int(top)]
    ratios = {p: row[p]["tokens_per_s"] / row["engine_stream"]["tokens_per_s"] for p in PROTOCOLS}
    print(f"service/engine at {top} streams: { {p: round(r, 2) for p, r in ratios.items()} }", flush=True)
    return {
        "model": MODEL,
        "tokens": figures["tokens"],
        "streams": {str(n): r for n, r in figures["streams"].items()},
        "service_over_engine_at": top,
        "service_over_engine": ratios,
    }
