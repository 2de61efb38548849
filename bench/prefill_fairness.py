"""`python -m bench.prefill_fairness`: does a long prompt hold up short requests' first tokens?

For each model, a real server (harness/server_process) answers short streamed completions one after
another, first on an idle server, then while long prompts are prefilled without pause (a closed
loop of one long request at a time: 100k tokens for a recurrent model; for a Transformer, the
longest prompt it takes). The figure is each phase's TTFT p99 (seconds from sending the request to
its first streamed token) and their ratio; the target (issue 12) is a loaded p99 at most 5x the
idle one.
Only short requests whose first token arrived while a long prompt was in flight count as loaded.

Writes bench/results/prefill_fairness.{json,md}, with the machine's load (1-minute average) before
and after each model's run. Run it on a quiet machine; a check of its logic in seconds:

    python -m bench.prefill_fairness --models <tiny model dir> --shorts 3 --long-tokens 3000 \
        --out-dir /tmp/fairness
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from harness.server_process import ServerProcess, linked_models
from service.engine import read_manifest

SHORT_PROMPT = "ROMEO:\nBut soft, what light"
LONG_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
)
TIMEOUT_S = 600.0


@dataclass
class Phase:
    ttft_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        if not self.ttft_s:
            return {"count": 0}
        values = np.array(self.ttft_s)
        return {
            "count": len(values),
            "p50_s": round(float(np.percentile(values, 50)), 4),
            "p99_s": round(float(np.percentile(values, 99)), 4),
            "max_s": round(float(values.max()), 4),
        }


async def first_token_s(client: httpx.AsyncClient, model: str, prompt: str | list[int], tokens: int) -> float:
    """Seconds from sending a streamed completion to its first token; reads the stream to its end."""
    body = {"model": model, "prompt": prompt, "max_tokens": tokens, "stream": True, "temperature": 0}
    start = time.perf_counter()
    first: float | None = None
    async with client.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {(await response.aread()).decode()[:300]}")
        async for line in response.aiter_lines():
            if first is None and line.startswith("data: {") and '"text"' in line:
                first = time.perf_counter() - start
    if first is None:
        raise RuntimeError("the stream ended without a token")
    return first


async def long_prompt_ids(client: httpx.AsyncClient, model: str, tokens: int) -> list[int]:
    """`tokens` ids of Shakespeare-like text, at most the longest prompt the server takes."""
    response = await client.post("/tokenize", json={"model": model, "prompt": LONG_TEXT})
    response.raise_for_status()
    ids, limit = response.json()["tokens"], response.json()["max_model_len"]
    tokens = min(tokens, limit) if limit else tokens
    return (ids * (tokens // len(ids) + 1))[:tokens]


async def measure(url: str, model: str, long_tokens: int, shorts: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=8)
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S, limits=limits) as client:
        long_ids = await long_prompt_ids(client, model, long_tokens)
        for _ in range(3):  # warm the short path (first-request costs are not what is measured)
            await first_token_s(client, model, SHORT_PROMPT, 2)
        idle = Phase()
        for _ in range(shorts):
            idle.ttft_s.append(await first_token_s(client, model, SHORT_PROMPT, 2))

        in_flight = asyncio.Event()
        done = asyncio.Event()
        long_ttft: list[float] = []

        async def long_loop() -> None:
            while not done.is_set():
                in_flight.set()
                long_ttft.append(await first_token_s(client, model, long_ids, 1))
                in_flight.clear()

        loader = asyncio.create_task(long_loop())
        loaded = Phase()
        attempts = 0
        try:
            while len(loaded.ttft_s) < shorts and attempts < 4 * shorts:
                attempts += 1
                await in_flight.wait()
                seconds = await first_token_s(client, model, SHORT_PROMPT, 2)
                if in_flight.is_set():  # a long prompt was in flight from start to first token
                    loaded.ttft_s.append(seconds)
        finally:
            done.set()
            await asyncio.wait_for(loader, TIMEOUT_S)
    idle_s, loaded_s = idle.summary(), loaded.summary()
    ratio = loaded_s["p99_s"] / idle_s["p99_s"] if loaded_s["count"] and idle_s["count"] else None
    return {
        "long_prompt_tokens": len(long_ids),
        "long_prompt_ttft_s": [round(s, 3) for s in long_ttft],
        "idle": idle_s,
        "while_long_prefills": loaded_s,
        "p99_ratio": None if ratio is None else round(ratio, 2),
    }


def run_model(
    model_dir: Path, name: str, long_tokens: int, shorts: int, threads: int | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fairness-") as tmp:
        root = Path(tmp)
        models = linked_models(root, {name: model_dir})
        # A Transformer keeps its default limit (its trained context); a recurrent model takes the long
        # prompt. No queue time limit: the measure is how long the short ones wait.
        env: dict[str, Any] = {"max_queue_time_s": 0, "recurrent_max_prompt_tokens": max(long_tokens, 16)}
        if threads is not None:
            env["intra_op_threads"] = threads
        server = ServerProcess(models, root / "server.log", **env).start_ready()
        load_before = os.getloadavg()[0]
        try:
            figures = asyncio.run(measure(server.url, name, long_tokens, shorts))
        finally:
            code = server.stop()
        if code != 0:
            raise RuntimeError(f"the server exited with {code}:\n{server.log()}")
    figures["load_1m"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    return figures


def markdown(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "# Prefill fairness: short requests' TTFT while long prompts are prefilled",
        "",
        f"`python -m bench.prefill_fairness --shorts {args.shorts} --long-tokens {args.long_tokens}`; "
        "TTFT of streamed 2-token completions, one at a time. Target: loaded p99 <= 5x idle p99.",
        "",
        "| model | long prompt (tokens) | idle TTFT p50 / p99 (s) | loaded TTFT p50 / p99 (s) "
        "| p99 ratio | long prompt's own TTFT (s) | load 1m before / after |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        idle, loaded = r["idle"], r["while_long_prefills"]
        own = r["long_prompt_ttft_s"]
        lines.append(
            f"| {name} | {r['long_prompt_tokens']:,} | {idle.get('p50_s')} / {idle.get('p99_s')} "
            f"| {loaded.get('p50_s')} / {loaded.get('p99_s')} ({loaded['count']} requests) "
            f"| {r['p99_ratio']} | {min(own) if own else '-'} "
            f"| {r['load_1m']['before']} / {r['load_1m']['after']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        nargs="*",
        type=Path,
        default=[Path("exported_models/shakespeare-lstm"), Path("exported_models/shakespeare-gpt")],
    )
    parser.add_argument(
        "--long-tokens", type=int, default=100_000, help="(a Transformer: its context at most)"
    )
    parser.add_argument("--shorts", type=int, default=100, help="short requests per phase")
    parser.add_argument("--threads", type=int, help="ORT intra-op threads (default: the service's)")
    parser.add_argument("--out-dir", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for model_dir in args.models:
        name = read_manifest(model_dir, verify=False).name
        results[name] = run_model(model_dir, name, args.long_tokens, args.shorts, args.threads)
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"args": {k: str(v) for k, v in vars(args).items()}, "results": results}
    (args.out_dir / "prefill_fairness.json").write_text(json.dumps(payload, indent=1) + "\n")
    (args.out_dir / "prefill_fairness.md").write_text(markdown(results, args))


if __name__ == "__main__":
    main()
