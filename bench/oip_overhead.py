"""What the Open Inference Protocol costs over /v1/sentiment: the same batch of texts, the same
classifier, through POST /v1/sentiment, POST /v2/models/{m}/infer with JSON tensors, and the same with
binary tensor data (tritonclient's defaults), at each concurrency. Target (issue 15): v2 adds <= 10%.

    python -m bench.oip_overhead [--model-dir exported_models/sst2-gpt] [--concurrency 1 64]
                                 [--batch 8] [--requests 2000] [--repeats 3] [--out FILE]

Rounds are interleaved (v1, v2 JSON, v2 binary, v1, ...) so that drifting machine load hits all
routes alike. Reported per route and concurrency: median over rounds of the p50/p90/p99 request
latency and of requests/s, the server's CPU milliseconds per request (steadier on a shared machine),
and each v2 route's overhead over v1 (p50 and CPU). The client runs in this process (aiohttp): on a
small machine it competes with the server for CPU, alike for every route.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from harness.procstat import cpu_seconds
from harness.server_process import ServerProcess, linked_models

REPO = Path(__file__).resolve().parents[1]
ROUTES = ("v1_sentiment", "v2_json", "v2_binary")
TEXTS = (
    "a gripping, beautifully acted film",
    "dull, slow and far too long",
    "the plot never quite comes together, but the cast is charming",
    "I would not watch it again",
    "one of the best films of the year",
    "an utterly forgettable sequel",
    "funny and warm, with a clever script",
    "the ending ruins everything that came before",
)


@dataclass(frozen=True)
class Request:
    """One route's request for the batch: path, body bytes and headers, built once."""

    path: str
    body: bytes
    headers: dict[str, str]


def requests_for(model: str, texts: list[str]) -> dict[str, Request]:
    json_headers = {"content-type": "application/json"}
    v1 = json.dumps({"model": model, "texts": texts}).encode()
    tensor = {"name": "text", "datatype": "BYTES", "shape": [len(texts)]}
    v2_json = json.dumps({"inputs": [{**tensor, "data": texts}]}).encode()
    raw = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
    header = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    binary_headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
    infer = f"/v2/models/{model}/infer"
    return {
        "v1_sentiment": Request("/v1/sentiment", v1, json_headers),
        "v2_json": Request(infer, v2_json, json_headers),
        "v2_binary": Request(infer, header + raw, binary_headers),
    }


async def one_round(url: str, request: Request, concurrency: int, total: int) -> tuple[list[float], float]:
    """`total` requests from `concurrency` workers; returns each latency (s) and the round's wall time."""
    latencies: list[float] = []
    left = total
    connector = aiohttp.TCPConnector(limit=concurrency + 4)
    timeout = aiohttp.ClientTimeout(total=120.0)
    async with aiohttp.ClientSession(base_url=url, connector=connector, timeout=timeout) as client:

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                start = time.perf_counter()
                async with client.post(request.path, data=request.body, headers=request.headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{request.path}: {response.status} {await response.text()}")
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return latencies, wall


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(
    url: str, pid: int, model: str, texts: list[str], concurrency: list[int], requests: int, repeats: int
) -> dict[str, Any]:
    """Interleaved rounds against a running server (`pid` for its CPU time); one warm-up round each."""
    by_route = requests_for(model, texts)
    rounds: dict[int, dict[str, list[dict[str, float]]]] = {c: {r: [] for r in ROUTES} for c in concurrency}
    for c in concurrency:
        for route in ROUTES:  # warm-up: connections, batcher, caches
            asyncio.run(one_round(url, by_route[route], c, min(requests, 4 * c)))
        for _ in range(repeats):
            for route in ROUTES:
                cpu_start = cpu_seconds(pid)
                latencies, wall = asyncio.run(one_round(url, by_route[route], c, requests))
                cpu = cpu_seconds(pid) - cpu_start
                rounds[c][route].append(
                    {
                        "p50_ms": 1000 * _quantile(latencies, 0.50),
                        "p90_ms": 1000 * _quantile(latencies, 0.90),
                        "p99_ms": 1000 * _quantile(latencies, 0.99),
                        "requests_per_s": len(latencies) / wall,
                        "server_cpu_ms_per_request": 1000 * cpu / len(latencies),
                    }
                )
    results: dict[str, Any] = {}
    for c, routes in rounds.items():
        summary = {
            route: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            for route, runs in routes.items()
        }
        base = summary["v1_sentiment"]
        for route in ("v2_json", "v2_binary"):
            summary[route]["p50_overhead_pct"] = 100 * (summary[route]["p50_ms"] / base["p50_ms"] - 1)
            summary[route]["cpu_overhead_pct"] = 100 * (
                summary[route]["server_cpu_ms_per_request"] / base["server_cpu_ms_per_request"] - 1
            )
        results[str(c)] = summary
    return results


@contextlib.contextmanager
def classifier_server(model_dir: Path, threads: int) -> Iterator[tuple[str, int]]:
    """`python -m service` serving only `model_dir`; yields its URL and process id."""
    with tempfile.TemporaryDirectory() as tmp:
        models = linked_models(Path(tmp), {model_dir.name: model_dir})
        server = ServerProcess(models, Path(tmp) / "server.log", intra_op_threads=threads).start()
        try:
            server.wait_ready()
            assert server.proc is not None
            yield server.url, server.proc.pid
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=REPO / "exported_models" / "sst2-gpt")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--batch", type=int, default=8, help="texts per request")
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="ORT threads (0: the service's rule)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    model = json.loads((args.model_dir / "manifest.json").read_text())["name"]
    texts = [TEXTS[i % len(TEXTS)] for i in range(args.batch)]
    load_before = os.getloadavg()[0]
    with classifier_server(args.model_dir, args.threads) as (url, pid):
        results = measure(url, pid, model, texts, args.concurrency, args.requests, args.repeats)
    report = {
        "model": model,
        "batch": args.batch,
        "requests_per_round": args.requests,
        "load_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    columns = ("p50 ms", "p99 ms", "req/s")
    print(
        f"{'conc.':>6} {'route':>13} "
        + " ".join(f"{c:>8}" for c in columns)
        + f" {'CPU ms/req':>11} {'p50 +%':>7}"
    )
    for c, summary in results.items():
        for route in ROUTES:
            s = summary[route]
            extra = f"{s['p50_overhead_pct']:7.1f}" if "p50_overhead_pct" in s else f"{'':>7}"
            print(
                f"{c:>6} {route:>13} {s['p50_ms']:8.2f} {s['p99_ms']:8.2f} {s['requests_per_s']:8.0f} "
                f"{s['server_cpu_ms_per_request']:11.3f} {extra}"
            )


if __name__ == "__main__":
    main()
