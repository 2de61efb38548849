"""R3 disconnects: streaming clients (SSE and gRPC) that hang up mid-generation give back every slot:
running requests and used slots return to 0 on /metrics, each is counted as 499, and the server
keeps serving."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from harness.loadgen import Call, Clients, drive, mixed_calls
from harness.metrics_reader import sample, wait_for
from harness.server_process import ServerProcess
from tests.system.conftest import Models, Scale

# Far more than a client reads before it hangs up (1-5 tokens), so that no stream can end before
# its client leaves, even when the client lags and the server writes a backlog in one message.
STREAM_TOKENS = 1000
ROUTES = ("/v1/generate", "grpc.GenerateStream")


def test_streaming_clients_that_hang_up_free_every_slot_and_the_server_keeps_serving(
    system_models: Models, scale: Scale, serve: Callable[..., ServerProcess], record: Callable
) -> None:
    # Recurrent: a Transformer may not be asked for more tokens than its context holds.
    model = system_models.recurrent
    server = serve(system_models.root, max_new_tokens=STREAM_TOKENS)  # otherwise the defaults
    protocols = ("rest", "grpc")
    leavers = [
        Call(protocols[i % 2], True, model, "To be, or not", STREAM_TOKENS, hang_up_after=1 + i % 5)
        for i in range(scale.disconnect_clients)
    ]

    async def scenario() -> tuple[list, list]:
        async with Clients(server.url, server.grpc_target, 32, timeout_s=120.0) as clients:
            left = await asyncio.wait_for(drive(clients, leavers, 32), 300.0)
            with httpx.Client(base_url=server.url, timeout=10.0) as http:
                for gauge in ("seqserve_num_requests_running", "seqserve_kv_slots_used"):
                    await asyncio.to_thread(wait_for, http, gauge, lambda v: v == 0, 60.0, model=model)
            after = await asyncio.wait_for(drive(clients, mixed_calls(8, model, 8), 8), 120.0)
            return left, after

    left, after = asyncio.run(scenario())
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        cancelled = sum(
            sample(http, "seqserve_requests_total", route=r, model=model, status="499") or 0 for r in ROUTES
        )
        waiting = sample(http, "seqserve_num_requests_waiting", model=model)
    record(
        "r3_disconnects",
        {"clients": len(left), "counted_499": cancelled, "served_after": sum(o.complete for o in after)},
    )
    assert [o.status for o in left] == ["hung_up"] * len(leavers), [o for o in left if o.status != "hung_up"]
    assert cancelled == len(leavers)
    assert waiting == 0
    assert all(o.complete for o in after), after
