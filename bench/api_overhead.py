"""What the API costs: generated tokens/s in-process (engine.submit) vs through REST (`python -m service`).

    python -m bench.api_overhead [--model-dir exported_models/shakespeare-gpt] [--streams 1 32]

Each configuration runs `streams` concurrent greedy requests of `--new-tokens` tokens (eos ignored),
`--repeats` times after one warm-up, interleaved. REST is measured unary and streaming (SSE, one
event per token), with the client in this process: on a small machine the client's CPU competes
with the server's. Reported: median tokens/s, and CPU milliseconds per generated token of the
process that serves (this one in-process, the server's for REST), which a shared machine's load
disturbs far less than the wall clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp

from harness.procstat import cpu_seconds
from harness.server_process import ServerProcess, linked_models
from service.engine import GenerationRequest, SamplingParams, load_generation_model
from service.settings import Settings

REPO = Path(__file__).resolve().parents[1]
MODES = ("in_process", "rest_unary", "rest_sse")
PROMPT = "ROMEO:\nWhat light through yonder window breaks?\n"


def settings(max_slots: int, threads: int) -> Settings:
    return Settings(max_slots=max_slots, max_queue=1024, intra_op_threads=threads, max_new_tokens=4096)


async def _engine_round(engine, streams: int, new_tokens: int) -> int:
    params = SamplingParams(max_new_tokens=new_tokens, ignore_eos=True)
    handles = [engine.submit(GenerationRequest(prompt=PROMPT, params=params)) for _ in range(streams)]
    results = await asyncio.gather(*(h.result() for h in handles))
    return sum(r.usage.completion_tokens for r in results)


def measure(run_once: Callable[[], int], cpu_seconds: Callable[[], float]) -> tuple[float, float]:
    """(generated tokens per second, CPU milliseconds per token of the serving process) of one round.

    CPU time is the steadier figure on a shared machine: other work slows the wall clock, not it."""
    start, cpu_start = time.perf_counter(), cpu_seconds()
    tokens = run_once()
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    return tokens / wall, 1000.0 * cpu / tokens


async def _rest_round(url: str, model: str, streams: int, new_tokens: int, stream: bool) -> int:
    body = {"model": model, "prompt": PROMPT, "max_tokens": new_tokens, "temperature": 0, "ignore_eos": True}
    connector = aiohttp.TCPConnector(limit=streams + 4)
    timeout = aiohttp.ClientTimeout(total=600.0)
    async with aiohttp.ClientSession(base_url=url, connector=connector, timeout=timeout) as client:

        async def one() -> int:
            if not stream:
                async with client.post("/v1/completions", json=body) as response:
                    response.raise_for_status()
                    return (await response.json())["usage"]["completion_tokens"]
            streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
            tokens = 0
            async with client.post("/v1/completions", json=streamed) as response:
                response.raise_for_status()
                async for line in response.content:
                    if line.startswith(b"data: {") and b'"usage":{' in line:
                        tokens = json.loads(line[6:])["usage"]["completion_tokens"]
            return tokens

        return sum(await asyncio.gather(*(one() for _ in range(streams))))


@contextlib.contextmanager
def rest_server(model_dir: Path, max_slots: int, threads: int) -> Iterator[tuple[str, int]]:
    """`python -m service` serving only `model_dir`; yields its URL and process id."""
    with tempfile.TemporaryDirectory() as tmp:
        models = linked_models(Path(tmp), {model_dir.name: model_dir})
        server = ServerProcess(
            models,
            Path(tmp) / "server.log",
            max_slots=max_slots,
            max_queue=1024,
            max_new_tokens=4096,
            intra_op_threads=threads,
        ).start()
        try:
            server.wait_ready()
            assert server.proc is not None
            yield server.url, server.proc.pid
        finally:
            server.stop()


def run(model_dir: Path, streams: list[int], new_tokens: int, repeats: int, threads: int) -> dict:
    """Rounds interleaved (engine, REST unary, REST SSE, engine, ...) so that a shared machine's load
    drifts over all three alike; the server idles while the in-process engine runs, and vice versa."""
    name = json.loads((model_dir / "manifest.json").read_text())["name"]
    engine = load_generation_model(model_dir, settings(max(streams), threads))
    engine.start()
    rates: dict[str, dict[int, list[tuple[float, float]]]] = {m: {n: [] for n in streams} for m in MODES}
    try:
        with rest_server(model_dir, max(streams), threads) as (url, pid):
            rounds = {
                "in_process": lambda n: asyncio.run(_engine_round(engine, n, new_tokens)),
                "rest_unary": lambda n: asyncio.run(_rest_round(url, name, n, new_tokens, False)),
                "rest_sse": lambda n: asyncio.run(_rest_round(url, name, n, new_tokens, True)),
            }
            cpu = {
                "in_process": time.process_time,
                "rest_unary": lambda: cpu_seconds(pid),
                "rest_sse": lambda: cpu_seconds(pid),
            }
            for n in streams:
                for mode in MODES:  # warm-up
                    rounds[mode](n)
                for _ in range(repeats):
                    for mode in MODES:
                        rates[mode][n].append(measure(lambda m=mode, n=n: rounds[m](n), cpu[mode]))
    finally:
        asyncio.run(engine.stop(5))
    return {
        mode: {
            n: {
                "tokens_per_s_median": statistics.median(r for r, _ in runs),
                "tokens_per_s_best": max(r for r, _ in runs),
                "cpu_ms_per_token_median": statistics.median(c for _, c in runs),
            }
            for n, runs in by_n.items()
        }
        for mode, by_n in rates.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=REPO / "exported_models" / "shakespeare-gpt")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: ORT decides)")
    args = parser.parse_args()

    results = run(args.model_dir, args.streams, args.new_tokens, args.repeats, args.threads)
    print(json.dumps({"model": str(args.model_dir), "new_tokens": args.new_tokens, **results}, indent=2))
    print(f"{'streams':>8} {'':>22} {'in-process':>12} {'REST unary':>12} {'REST SSE':>12}")
    for n in args.streams:
        rate = [results[m][n]["tokens_per_s_median"] for m in MODES]
        cpu = [results[m][n]["cpu_ms_per_token_median"] for m in MODES]
        print(f"{n:>8} {'tokens/s (median)':>22} " + " ".join(f"{r:12.0f}" for r in rate))
        print(f"{'':>8} {'server CPU ms/token':>22} " + " ".join(f"{c:12.3f}" for c in cpu))


if __name__ == "__main__":
    main()
