"""Run REST (uvicorn) and gRPC (grpc.aio) in one event loop, load the models, and drain on SIGTERM.

Shutdown order: readiness and health go NOT_SERVING at once and new work is refused (503 /
UNAVAILABLE); in-flight requests finish, up to SEQSERVE_DRAIN_TIMEOUT_S, after which the engines
cancel what is left (those requests get a retryable 503 / UNAVAILABLE); then both servers stop and
the process exits 0. A second SIGTERM or SIGINT during the drain ends it at once, as in uvicorn.

With SEQSERVE_WORKERS > 1 this runs in every worker (service/supervisor.py starts them): both
ports are bound with SO_REUSEPORT, and responses name the worker (`x-seqserve-worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Iterator

import uvicorn

from service import gc_tuning, metrics
from service.api.core import InferenceCore
from service.api.grpc_server import HealthReporter, build_server
from service.api.middleware import WorkerHeaderMiddleware
from service.api.rest import create_app
from service.ports import shared_listener
from service.registry import ModelRegistry
from service.settings import Settings

log = logging.getLogger("seqserve")

# After the drain, what is left are idle keep-alive connections and streams already cancelled.
_SERVER_GRACE_S = 2.0
_KEEP_ALIVE_S = 75


class _Uvicorn(uvicorn.Server):
    """Signals are handled by `serve` below: uvicorn's own handler would re-raise SIGTERM after its
    shutdown, and the process would die by the signal instead of exiting 0 after the drain."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(settings: Settings, worker_index: int | None = None) -> int:
    """Serve until SIGTERM or SIGINT; returns the process exit code. `worker_index`: this process is
    one of SEQSERVE_WORKERS workers."""
    registry = ModelRegistry(settings)
    registry.discover()
    core = InferenceCore(registry, settings)
    app = create_app(core, settings)
    config = uvicorn.Config(
        app if worker_index is None else WorkerHeaderMiddleware(app, worker_index),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=int(_SERVER_GRACE_S),
        # Longer than the usual proxy/load-balancer idle timeout (60 s): with uvicorn's 5 s default a
        # client reusing a connection that idled ~5 s races the server's close and gets a reset.
        timeout_keep_alive=_KEEP_ALIVE_S,
    )
    http = _Uvicorn(config)
    http_sockets: list[socket.socket] | None = None
    if settings.workers > 1:  # uvicorn has no SO_REUSEPORT option, but serves a socket bound here
        try:
            http_sockets = [shared_listener(settings.http_host, settings.http_port, config.backlog)]
        except OSError as exc:
            log.error("REST server could not start on %s:%d: %s", settings.http_host, settings.http_port, exc)
            return 1
    try:
        grpc_server, health, grpc_port = await build_server(core, settings)
    except RuntimeError as exc:  # grpc raises this when the address cannot be bound
        log.error("gRPC server could not start on %s:%d: %s", settings.grpc_host, settings.grpc_port, exc)
        for sock in http_sockets or ():
            sock.close()
        return 1
    await grpc_server.start()
    http_task = asyncio.create_task(_run_http(http, http_sockets), name="uvicorn")

    stop, hurry = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, sig, stop, hurry)
    log.info(
        "seqserve starting: REST on http://%s:%d, gRPC on %s:%d; loading models from %s",
        settings.http_host,
        settings.http_port,
        settings.grpc_host,
        grpc_port,
        settings.models_dir,
    )
    gc_tuning.collect_less_often()
    loader = asyncio.create_task(registry.load_all(), name="model-loader")
    loader.add_done_callback(lambda _: gc_tuning.freeze_startup_heap())
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait({stop_task, http_task}, return_when=asyncio.FIRST_COMPLETED)
    if http_task.done():
        log.error("the REST server stopped unexpectedly")
        stop_task.cancel()
        await grpc_server.stop(0)
        await registry.stop(0)
        return 1

    await _drain(settings, core, registry, loader, health, hurry)
    http.should_exit = True
    await http_task
    await grpc_server.stop(_SERVER_GRACE_S)
    log.info("seqserve stopped")
    return 0


def _on_signal(sig: signal.Signals, stop: asyncio.Event, hurry: asyncio.Event) -> None:
    """The first signal starts the drain; a second one ends it now (an operator who means it)."""
    if not stop.is_set():
        log.info("%s: shutting down", sig.name)
        stop.set()
    elif not hurry.is_set():
        log.warning("%s again: ending the drain now, cancelling the requests in flight", sig.name)
        hurry.set()
    else:
        log.warning("%s again: the drain is already ending", sig.name)


async def _run_http(http: uvicorn.Server, sockets: list[socket.socket] | None) -> None:
    """uvicorn exits the process (SystemExit) when it cannot bind; we want a clean shutdown instead."""
    try:
        await http.serve(sockets=sockets)
    except SystemExit as exc:
        log.error(
            "REST server could not start on %s:%d (exit %s)", http.config.host, http.config.port, exc.code
        )


async def _drain(
    settings: Settings,
    core: InferenceCore,
    registry: ModelRegistry,
    loader: asyncio.Task[None],
    health: HealthReporter,
    hurry: asyncio.Event,
) -> None:
    """Refuse new work, let in-flight requests finish within the drain timeout (or until `hurry` is
    set by a second signal), then stop the engines, which cancel what is left."""
    started = time.monotonic()
    core.start_draining()
    metrics.SERVER_DRAINING.set(1)
    await health.refresh()  # gRPC health goes NOT_SERVING now, like /readyz
    log.info("draining: %d requests in flight, up to %.1fs", core.in_flight, settings.drain_timeout_s)
    if not loader.done():
        loader.cancel()  # a model still loading will not be served by this process any more
    idle = asyncio.ensure_future(core.wait_idle(settings.drain_timeout_s))
    hurried = asyncio.ensure_future(hurry.wait())
    await asyncio.wait({idle, hurried}, return_when=asyncio.FIRST_COMPLETED)
    hurried.cancel()
    finished = idle.done() and idle.result()
    idle.cancel()
    late = core.in_flight
    left = 0.0 if hurry.is_set() else max(0.0, settings.drain_timeout_s - (time.monotonic() - started))
    await registry.stop(left)
    if not finished:
        why = "a second signal came" if hurry.is_set() else "the drain timeout passed"
        log.warning("%s with %d requests in flight: they were cancelled", why, late)
        await core.wait_idle(_SERVER_GRACE_S)
    log.info("drained in %.2fs", time.monotonic() - started)
