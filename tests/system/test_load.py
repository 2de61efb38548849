"""R1 load: a long mix of REST/gRPC, unary/streaming generations at 64 concurrency loses nothing,
fails nothing, and does not leak memory (server RSS of the last chunk within 10% of the first)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from harness.loadgen import Clients, Outcome, drive, mixed_calls, percentile
from harness.procstat import rss_kib
from harness.server_process import ServerProcess
from tests.system.conftest import SOAK, Models, Scale

CHUNK_TIMEOUT_S = 900.0 if SOAK else 120.0


def test_a_long_mixed_load_gets_complete_answers_without_5xx_or_rss_growth(
    system_models: Models, scale: Scale, serve: Callable[..., ServerProcess], record: Callable
) -> None:
    server = serve(system_models.root, max_slots=16, max_queue=64, max_new_tokens=64)
    assert server.proc is not None
    calls = mixed_calls(scale.load_requests, system_models.generate, scale.load_tokens)

    async def scenario() -> tuple[list[Outcome], list[int], float]:
        outcomes: list[Outcome] = []
        rss: list[int] = []
        start = asyncio.get_running_loop().time()
        async with Clients(server.url, server.grpc_target, scale.load_concurrency) as clients:
            for i in range(0, len(calls), scale.load_chunk):
                chunk = calls[i : i + scale.load_chunk]
                outcomes += await asyncio.wait_for(
                    drive(clients, chunk, scale.load_concurrency), CHUNK_TIMEOUT_S
                )
                rss.append(rss_kib(server.proc.pid))
        return outcomes, rss, asyncio.get_running_loop().time() - start

    outcomes, rss, seconds = asyncio.run(scenario())
    server_errors = [o for o in outcomes if o.server_error]
    lost = [o for o in outcomes if not o.complete]
    growth = rss[-1] / rss[0] - 1.0
    e2e = [o.e2e_s for o in outcomes]
    record(
        "r1_load",
        {
            "requests": len(outcomes),
            "concurrency": scale.load_concurrency,
            "max_tokens": scale.load_tokens,
            "model": system_models.generate,
            "seconds": seconds,
            "requests_per_s": len(outcomes) / seconds,
            "server_errors": len(server_errors),
            "lost": len(lost),
            "lost_detail": [f"{o.call} {o.status} {o.error}" for o in lost[:5]],
            "retried_keepalive_race": sum(o.retries for o in outcomes),
            "rss_kib_per_chunk": rss,
            "rss_growth": growth,
            "e2e_p50_s": percentile(e2e, 50),
            "e2e_p99_s": percentile(e2e, 99),
        },
    )
    assert len(outcomes) == scale.load_requests
    assert not server_errors, server_errors[:3]
    assert not lost, lost[:3]
    assert growth <= 0.10, f"RSS grew {growth:.1%}: {rss} KiB"
