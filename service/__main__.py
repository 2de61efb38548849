"""`python -m service`: REST and gRPC in one process, configured by SEQSERVE_* environment variables.

With SEQSERVE_WORKERS > 1 this process becomes the supervisor of that many such processes
(service/supervisor.py), each started as `python -m service` again, marked as a worker.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop
from pydantic import ValidationError

from service.logging_setup import setup_logging
from service.settings import load_settings
from service.worker_process import become_worker, worker_index, worker_settings


def main() -> int:
    try:
        settings = load_settings()
    except ValidationError as exc:
        print(f"invalid SEQSERVE_* settings:\n{exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_format)
    index = worker_index()
    if settings.workers > 1 and index is None:
        from service.supervisor import supervise

        return asyncio.run(supervise(settings))
    if index is not None:
        become_worker(index)
        settings = worker_settings(settings)
    # Imported here, not above: the supervisor needs neither the engine nor the API (onnxruntime,
    # FastAPI, grpc), and N workers are enough copies of them.
    from service.api.server import serve

    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000.0)
    # uvloop: the event loop's own work per streamed token (socket writes, callbacks) costs less.
    return uvloop.run(serve(settings, index))


if __name__ == "__main__":
    sys.exit(main())
