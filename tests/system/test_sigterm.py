"""R4 SIGTERM under load: with streams running (SSE and gRPC), readiness turns 503 at once, every
in-flight stream still completes in full, and the process exits 0 within the drain grace period."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from harness.loadgen import Clients, Outcome, drive, mixed_calls
from harness.server_process import ServerProcess
from tests.system.conftest import Models, Scale

GRACE_S = 60.0
READY_503_WITHIN_S = 1.0


async def first_503(client: httpx.AsyncClient, timeout: float) -> float:
    """Seconds until /readyz answers 503 (polled: the server offers no event for it)."""
    start = time.monotonic()
    while (await client.get("/readyz")).status_code != 503:
        if time.monotonic() - start > timeout:
            break
        await asyncio.sleep(0.005)
    return time.monotonic() - start


def test_sigterm_while_streams_run_drains_them_all_and_exits_zero(
    system_models: Models, scale: Scale, serve: Callable[..., ServerProcess], record: Callable
) -> None:
    n, tokens = scale.sigterm_streams, scale.sigterm_tokens
    server = serve(  # the queued half waits for whole generations: no queue time limit
        system_models.root,
        max_slots=n,
        max_queue=n,
        max_new_tokens=tokens,
        drain_timeout_s=GRACE_S,
        max_queue_time_s=0,
    )
    streams = [c for c in mixed_calls(2 * n, system_models.recurrent, tokens) if c.stream]

    async def scenario() -> tuple[list[Outcome], float, bool]:
        started = 0
        all_started = asyncio.Event()

        def on_first_token() -> None:
            nonlocal started
            started += 1
            if started == n:
                all_started.set()

        async with (
            Clients(server.url, server.grpc_target, n, timeout_s=GRACE_S, on_first_token=on_first_token) as c,
            httpx.AsyncClient(base_url=server.url, timeout=5.0) as probe,
        ):
            running = asyncio.create_task(drive(c, streams, n))
            await asyncio.wait_for(all_started.wait(), 120.0)
            server.terminate()
            to_503 = await first_503(probe, 10.0)
            in_flight = not running.done()
            return await asyncio.wait_for(running, GRACE_S), to_503, in_flight

    outcomes, to_503, in_flight = asyncio.run(scenario())
    t0 = time.monotonic()
    code = server.wait_exit(GRACE_S)
    record(
        "r4_sigterm",
        {
            "streams": n,
            "tokens": tokens,
            "readyz_503_after_s": to_503,
            "completed": sum(o.complete for o in outcomes),
            "exit_code": code,
            "exit_after_streams_s": time.monotonic() - t0,
        },
    )
    assert len(outcomes) == n
    assert in_flight, "the streams ended before the drain could be observed: raise sigterm_tokens"
    assert to_503 <= READY_503_WITHIN_S
    assert all(o.complete for o in outcomes), [o for o in outcomes if not o.complete][:3]
    assert code == 0, server.log()
    assert "drained in" in server.log()
