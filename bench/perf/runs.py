"""The measurements of the performance report: streamed generation through the service (REST SSE and
gRPC) and in-process (bench.api_overhead's engine round), and sentiment, concurrent vs sequential.

Every round is bounded: a fixed count of requests, each with a timeout.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import aiohttp

from bench.api_overhead import PROMPT, _engine_round
from harness.loadgen import Call, Clients, Outcome, Protocol, drive, percentile
from harness.procstat import cpu_seconds

SENTIMENT_TEXTS = (
    "a gorgeous, witty, seductive movie",
    "a tedious mess",
    "it is what it is",
    "not bad at all",
)


def latency_summary(values: list[float]) -> dict[str, float]:
    """p50/p90/p99 in milliseconds."""
    return {f"p{q}_ms": 1000.0 * percentile(values, q) for q in (50, 90, 99)}


async def service_round(
    url: str, grpc_target: str, protocol: Protocol, model: str, streams: int, tokens: int
) -> list[Outcome]:
    """`streams` concurrent streamed generations of exactly `tokens` tokens (eos ignored)."""
    calls = [Call(protocol, True, model, PROMPT, tokens) for _ in range(streams)]
    async with Clients(url, grpc_target, streams, timeout_s=600.0) as clients:
        return await asyncio.wait_for(drive(clients, calls, streams), 900.0)


def measure_service(
    url: str,
    grpc_target: str,
    pid: int,
    protocol: Protocol,
    model: str,
    streams: int,
    tokens: int,
    repeats: int,
) -> dict[str, Any]:
    """Median tokens/s over `repeats` rounds (after one warm-up), and latency percentiles over all."""
    asyncio.run(service_round(url, grpc_target, protocol, model, streams, tokens))
    rates, cpu, client_cpu, outcomes = [], [], [], []
    for _ in range(repeats):
        start, cpu_start, client_start = time.perf_counter(), cpu_seconds(pid), time.process_time()
        got = asyncio.run(service_round(url, grpc_target, protocol, model, streams, tokens))
        wall = time.perf_counter() - start
        generated = sum(o.tokens for o in got)
        if not all(o.complete for o in got):
            raise RuntimeError(
                f"{protocol} x{streams}: incomplete answers: {[o for o in got if not o.complete][:2]}"
            )
        rates.append(generated / wall)
        cpu.append(1000.0 * (cpu_seconds(pid) - cpu_start) / generated)
        client_cpu.append(1000.0 * (time.process_time() - client_start) / generated)
        outcomes += got
    return {
        "tokens_per_s": statistics.median(rates),
        "tokens_per_s_all": rates,
        "server_cpu_ms_per_token": statistics.median(cpu),
        "client_cpu_ms_per_token": statistics.median(client_cpu),
        "ttft": latency_summary([o.ttft_s for o in outcomes if o.ttft_s is not None]),
        "inter_token": latency_summary([g for o in outcomes for g in o.gaps_s]),
        "e2e": latency_summary([o.e2e_s for o in outcomes]),
    }


def measure_engine(engine: Any, streams: int, tokens: int, repeats: int) -> dict[str, Any]:
    """In-process `engine.submit` at the same batch size: median tokens/s after one warm-up."""
    asyncio.run(_engine_round(engine, streams, tokens))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        generated = asyncio.run(_engine_round(engine, streams, tokens))
        rates.append(generated / (time.perf_counter() - start))
    return {"tokens_per_s": statistics.median(rates), "tokens_per_s_all": rates}


async def _sentiment(url: str, model: str, requests: int, concurrency: int) -> tuple[float, list[float]]:
    """(requests/s, per-request seconds) for `requests` one-text calls with `concurrency` callers."""
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency + 4)
    timeout = aiohttp.ClientTimeout(total=60.0)
    async with aiohttp.ClientSession(base_url=url, connector=connector, timeout=timeout) as client:
        left = iter(range(requests))

        async def caller() -> None:
            for i in left:
                body = {"model": model, "texts": [SENTIMENT_TEXTS[i % len(SENTIMENT_TEXTS)]]}
                t0 = time.perf_counter()
                async with client.post("/v1/sentiment", json=body) as response:
                    response.raise_for_status()
                    await response.read()
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(caller() for _ in range(concurrency))), 600.0)
        return requests / (time.perf_counter() - start), latencies


def measure_sentiment(url: str, model: str, requests: int, concurrency: int) -> dict[str, Any]:
    """Sequential calls vs `concurrency` concurrent callers (the dynamic batcher's gain)."""
    asyncio.run(_sentiment(url, model, 20, 4))  # warm-up
    results: dict[str, Any] = {}
    for name, callers, count in (
        ("sequential", 1, requests // 4),
        (f"concurrent_{concurrency}", concurrency, requests),
    ):
        rate, lat = asyncio.run(_sentiment(url, model, count, callers))
        results[name] = {"requests": count, "requests_per_s": rate, **latency_summary(lat)}
    results["ratio"] = (
        results[f"concurrent_{concurrency}"]["requests_per_s"] / results["sequential"]["requests_per_s"]
    )
    return results
