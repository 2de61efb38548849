"""The service side: rounds of requests through one protocol, and the refusal burst against a full
server. The server's CPU time is read from /proc (all its threads, and its workers' with
SEQSERVE_WORKERS > 1), from outside the process."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx

from bench.ceiling.measure import Round
from bench.ceiling.workload import Workload
from harness.loadgen import Call, Clients, Outcome, drive, percentile
from harness.metrics_reader import sample, wait_for
from harness.procstat import tree_cpu_seconds
from harness.server_process import ServerProcess


def service_round(server: ServerProcess, calls: list[Call], concurrency: int) -> Round:
    """The calls with at most `concurrency` in flight; connections are opened before the clock starts."""

    async def scenario() -> Round:
        async with Clients(server.url, server.grpc_target, concurrency, timeout_s=900.0) as clients:
            await clients.connect(concurrency)
            start, cpu_start = time.perf_counter(), tree_cpu_seconds(server.pid)
            outcomes = await asyncio.wait_for(drive(clients, calls, concurrency), 1800.0)
            seconds, cpu = time.perf_counter() - start, tree_cpu_seconds(server.pid) - cpu_start
        return Round.of(outcomes, seconds, cpu)

    return asyncio.run(scenario())


def slots_and_waiting(server: ServerProcess, model: str) -> tuple[int, int]:
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        slots = sample(http, "seqserve_kv_slots_capacity", model=model) or 0
        waiting = sample(http, "seqserve_num_requests_waiting", model=model) or 0
    return int(slots), int(waiting)


def refusal_burst(
    server: ServerProcess, workload: Workload, model: str, queue: int, burst: int, filler_tokens: int
) -> dict[str, Any]:
    """Fill every slot and queue place with long unary completions, then send `burst` completions at
    once. Pass: every excess is a 429 with Retry-After, every accepted one completes, no 5xx."""
    slots, _ = slots_and_waiting(server, model)
    fill = [workload.call("openai", False, model, filler_tokens) for _ in range(slots + queue)]
    excess = [workload.call("openai", False, model, 1) for _ in range(burst)]

    async def scenario() -> tuple[list[Outcome], list[Outcome], bool]:
        connections = len(fill) + burst
        async with Clients(server.url, server.grpc_target, connections, timeout_s=900.0) as clients:
            await clients.connect(connections)
            filling = asyncio.create_task(drive(clients, fill, len(fill)))
            with httpx.Client(base_url=server.url, timeout=10.0) as http:
                try:
                    waits = "seqserve_num_requests_waiting"
                    await asyncio.to_thread(wait_for, http, waits, lambda v: v == queue, 60.0, model=model)
                    full = True
                except AssertionError:  # the fillers finished or were refused: reported, not fatal
                    full = False
            refused = await asyncio.wait_for(asyncio.gather(*(clients.run(c) for c in excess)), 900.0)
            return await asyncio.wait_for(filling, 1800.0), list(refused), full

    log_start = len(server.log())
    filled, answered, full = asyncio.run(scenario())
    # The server's own handling time of each 429 (its request log): the client-side figure also holds
    # this one client's wait to send and read a thousand requests on the same cores.
    server_ms = [float(m) for m in re.findall(r"status=429 duration_ms=([0-9.]+)", server.log()[log_start:])]
    outcomes = filled + answered
    refused = [o for o in answered if o.refused]
    accepted = [o for o in outcomes if not o.refused]
    result = {
        "slots": slots,
        "queue": queue,
        "full_when_sent": full,
        "fillers_refused": sum(o.refused for o in filled),
        "burst": burst,
        "burst_accepted": len(answered) - len(refused),
        "burst_refused": len(refused),
        "refused_without_retry_after": sum(not o.retry_after for o in refused),
        "refusal_ms": {
            "p50": 1000.0 * percentile([o.e2e_s for o in refused], 50),
            "p99": 1000.0 * percentile([o.e2e_s for o in refused], 99),
            "max": 1000.0 * max((o.e2e_s for o in refused), default=0.0),
        },
        "server_refusal_ms": {
            "p50": percentile(server_ms, 50),
            "p99": percentile(server_ms, 99),
            "max": max(server_ms, default=0.0),
        },
        "accepted_incomplete": sum(not o.complete for o in accepted),
        "server_errors": sum(o.server_error for o in outcomes),
    }
    result["ok"] = (
        result["refused_without_retry_after"] == 0
        and result["accepted_incomplete"] == 0
        and result["server_errors"] == 0
    )
    return result
