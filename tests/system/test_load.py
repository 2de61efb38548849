"""R1 load: a long mix of REST/gRPC, unary/streaming generations at 64 concurrency loses nothing,
fails nothing, and does not leak memory: after a warm-up, the server's RSS, read after every chunk of
requests, must not grow by LEAK_LIMIT_KIB or more per request (least-squares slope). The same check
against harness.leaky_service, which leaks 10 KB per request, must fail.

Why a warm-up: on the tiny models a clean server's RSS grows by about 10 KiB per request over its first
~1,000 requests (allocator arenas, caches, the collector's generations filling), then stays within a
few MB: a slope over the start would look like exactly the leak this check is after."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.leaky_service import LEAK_BYTES
from harness.loadgen import Clients, Outcome, drive, mixed_calls, percentile
from harness.procstat import rss_kib
from harness.server_process import ServerProcess
from tests.system.conftest import SOAK, Models, Scale

CHUNK_TIMEOUT_S = 900.0 if SOAK else 120.0
# Half the leak the check must catch: a 10 KB leak measures ~9.8 KiB per request, a clean server ~0.
LEAK_LIMIT_KIB = LEAK_BYTES / 1024 / 2


@dataclass
class LoadRun:
    outcomes: list[Outcome]
    rss_kib: list[int]  # at the end of the warm-up, then after each chunk
    chunk: int
    seconds: float

    @property
    def growth_kib_per_request(self) -> float:
        """Least-squares slope of RSS over the requests made since the warm-up."""
        requests = [self.chunk * i for i in range(len(self.rss_kib))]
        return statistics.linear_regression(requests, self.rss_kib).slope


def run_load(server: ServerProcess, model: str, scale: Scale) -> LoadRun:
    """The warm-up, then `load_requests` in chunks, all a REST/gRPC x unary/stream mix."""
    calls = mixed_calls(scale.load_warmup + scale.load_requests, model, scale.load_tokens)
    chunks = [calls[: scale.load_warmup]]
    chunks += [
        calls[i : i + scale.load_chunk] for i in range(scale.load_warmup, len(calls), scale.load_chunk)
    ]

    async def scenario() -> LoadRun:
        run = LoadRun([], [], scale.load_chunk, 0.0)
        start = asyncio.get_running_loop().time()
        async with Clients(server.url, server.grpc_target, scale.load_concurrency) as clients:
            for chunk in chunks:
                run.outcomes += await asyncio.wait_for(
                    drive(clients, chunk, scale.load_concurrency), CHUNK_TIMEOUT_S
                )
                run.rss_kib.append(rss_kib(server.pid))
        run.seconds = asyncio.get_running_loop().time() - start
        return run

    return asyncio.run(scenario())


def test_a_long_mixed_load_gets_complete_answers_without_5xx_or_rss_growth(
    system_models: Models, scale: Scale, serve: Callable[..., ServerProcess], record: Callable
) -> None:
    server = serve(system_models.root)  # the service's defaults
    run = run_load(server, system_models.generate, scale)
    outcomes = run.outcomes
    server_errors = [o for o in outcomes if o.server_error]
    lost = [o for o in outcomes if not o.complete]
    growth = run.growth_kib_per_request
    e2e = [o.e2e_s for o in outcomes]
    record(
        "r1_load",
        {
            "requests": len(outcomes),
            "warmup_requests": scale.load_warmup,
            "chunk": scale.load_chunk,
            "concurrency": scale.load_concurrency,
            "max_tokens": scale.load_tokens,
            "model": system_models.generate,
            "seconds": run.seconds,
            "requests_per_s": len(outcomes) / run.seconds,
            "server_errors": len(server_errors),
            "lost": len(lost),
            "lost_detail": [f"{o.call} {o.status} {o.error}" for o in lost[:5]],
            "retried_keepalive_race": sum(o.retries for o in outcomes),
            "rss_kib_per_chunk": run.rss_kib,
            "rss_growth_kib_per_request": growth,
            "e2e_p50_s": percentile(e2e, 50),
            "e2e_p99_s": percentile(e2e, 99),
        },
    )
    assert len(outcomes) == scale.load_warmup + scale.load_requests
    assert not server_errors, server_errors[:3]
    assert not lost, lost[:3]
    assert growth < LEAK_LIMIT_KIB, f"RSS grew {growth:.2f} KiB per request: {run.rss_kib} KiB"


def test_the_leak_check_catches_a_leak_of_10_kb_per_request(
    system_models: Models, scale: Scale, tmp_path: Path, record: Callable
) -> None:
    """The check above, against the same load on a server that leaks LEAK_BYTES per request."""
    server = ServerProcess(system_models.root, tmp_path / "leaky.log", module="harness.leaky_service")
    try:
        run = run_load(server.start_ready(), system_models.generate, scale)
    finally:
        server.stop()
    growth = run.growth_kib_per_request
    record(
        "r1_leak_check",
        {
            "leak_bytes_per_request": LEAK_BYTES,
            "rss_kib_per_chunk": run.rss_kib,
            "rss_growth_kib_per_request": growth,
        },
    )
    assert growth >= LEAK_LIMIT_KIB, f"a leak of {LEAK_BYTES} B per request went unseen: {run.rss_kib} KiB"
