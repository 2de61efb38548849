"""`python -m service` with SEQSERVE_WORKERS=N > 1: start N full workers that share the HTTP and gRPC
ports, forward SIGTERM/SIGINT to each, and exit 0 only when all of them drained and exited 0.

A worker that exits while nobody asked it to (a crash, an OOM kill, a port it could not bind) is
logged by index and pid, the others are stopped with SIGTERM (they drain as usual), and the
supervisor exits 1. It does not restart workers: the orchestrator that restarts one process today
(Kubernetes, a systemd unit) keeps that job, its restart count and back-off stay the signal that
something crashes, and a worker killed under some load would likely die again under the same load.
While the others drain, /readyz answers 503, so traffic moves to other replicas first.

The supervisor imports neither the engine nor the API: it holds no model and serves nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass

from prometheus_client.multiprocess import mark_process_dead

from service.ports import ensure_free
from service.settings import Settings
from service.worker_process import SUPERVISOR_PID_ENV, WORKER_INDEX_ENV

log = logging.getLogger("seqserve.supervisor")

# After the drain timeout, a worker still has its servers' grace and the engines' stop to go.
_EXIT_MARGIN_S = 15.0


@dataclass
class Worker:
    index: int
    process: asyncio.subprocess.Process

    @property
    def name(self) -> str:
        return f"worker {self.index} (pid {self.process.pid})"


def describe_exit(code: int) -> str:
    """`exited with code 1` or `was killed by SIGKILL` (asyncio reports a signal as -signum)."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


async def supervise(settings: Settings) -> int:
    """Run the workers until they have all exited; returns the supervisor's exit code."""
    if 0 in (settings.http_port, settings.grpc_port):
        log.error("SEQSERVE_WORKERS > 1 needs fixed ports: port 0 would give each worker its own port")
        return 2
    for host, port in ((settings.http_host, settings.http_port), (settings.grpc_host, settings.grpc_port)):
        try:
            ensure_free(host, port)
        except OSError as exc:
            log.error("cannot serve on %s:%d: %s", host, port, exc)
            return 1
    metrics_dir = tempfile.mkdtemp(prefix="seqserve-metrics-")
    try:
        return await _Supervisor(settings, metrics_dir).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


class _Supervisor:
    def __init__(self, settings: Settings, metrics_dir: str) -> None:
        self.settings = settings
        self.metrics_dir = metrics_dir
        self.workers: list[Worker] = []
        self.stopping = False
        self.stop_requested = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        for index in range(self.settings.workers):
            if self.stopping:  # a signal came while the workers were starting: it reached those
                break
            self.workers.append(await self._start(index))
        log.info("started %d workers; metrics aggregate in %s", len(self.workers), self.metrics_dir)
        if await self._reap():
            log.info("all %d workers exited cleanly", len(self.workers))
            return 0
        log.error("stopped: not every worker exited cleanly")
        return 1

    async def _start(self, index: int) -> Worker:
        env = {
            **os.environ,
            WORKER_INDEX_ENV: str(index),
            SUPERVISOR_PID_ENV: str(os.getpid()),
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
        }
        # Its own process group: a terminal's Ctrl-C reaches only the supervisor, which forwards it
        # once (a second signal would end the workers' drain at once).
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", env=env, process_group=0
        )
        worker = Worker(index, process)
        log.info("%s started", worker.name)
        return worker

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("received %s: forwarding it to %d workers", sig.name, len(self._alive()))
        self.stopping = True
        self.stop_requested.set()
        for worker in self._alive():
            worker.process.send_signal(sig)

    def _alive(self) -> list[Worker]:
        return [w for w in self.workers if w.process.returncode is None]

    def _stop_all(self) -> None:
        self.stopping = True
        self.stop_requested.set()
        for worker in self._alive():
            worker.process.send_signal(signal.SIGTERM)

    async def _reap(self) -> bool:
        """Wait for every worker; True when each exited 0 after being asked to stop."""
        clean = True
        waits = {asyncio.ensure_future(w.process.wait()): w for w in self.workers}
        stop_wait = asyncio.ensure_future(self.stop_requested.wait())
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while waits:
            if deadline is None and self.stopping:
                deadline = loop.time() + self.settings.drain_timeout_s + _EXIT_MARGIN_S
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            done, _ = await asyncio.wait(
                {*waits, stop_wait} if not stop_wait.done() else set(waits),
                timeout=timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not done:
                for worker in self._alive():
                    log.error("%s did not exit in time after the drain: killing it", worker.name)
                    worker.process.kill()
                clean = False
                deadline = loop.time() + _EXIT_MARGIN_S
                continue
            for task in done & waits.keys():
                worker = waits.pop(task)
                code = task.result()
                mark_process_dead(worker.process.pid, self.metrics_dir)  # its live gauges go
                if code == 0 and self.stopping:
                    log.info("%s exited cleanly", worker.name)
                    continue
                clean = False
                if self.stopping:
                    log.error("%s %s", worker.name, describe_exit(code))
                else:
                    log.error(
                        "%s %s unexpectedly: stopping the other workers", worker.name, describe_exit(code)
                    )
                    self._stop_all()
        stop_wait.cancel()
        return clean
