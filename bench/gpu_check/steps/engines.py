"""seqserve's engine opened on a provider, the way bench/engine opens it on the CPU (ORT's own thread
options, a bench-sized queue, no context limit so the benchmark's 128 + 256 tokens fit)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.engine import engine_runs
from service.engine import GenerationEngine, GenerationRequest, SamplingParams


def open_engine(model_dir: Path, provider: str, max_slots: int, threads: int) -> GenerationEngine:
    """The engine bench's own setup (one place for it), on `provider`."""
    return engine_runs.open_engine(model_dir, max_slots=max_slots, threads=threads, provider=provider)


def greedy(engine: GenerationEngine, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    """Greedy continuations of token-id prompts, all submitted together (as a batch would run)."""

    async def run() -> list[list[int]]:
        params = SamplingParams(max_new_tokens=new_tokens, temperature=0.0, ignore_eos=True)
        handles = [
            engine.submit(GenerationRequest(prompt_token_ids=tuple(p), params=params, stream=False))
            for p in prompts
        ]
        results = await asyncio.gather(*(h.result() for h in handles))
        return [list(r.outputs[0].token_ids) for r in results]

    return asyncio.run(run())


def close(engine: GenerationEngine) -> None:
    asyncio.run(engine.stop(5))


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """Index of the first token where two greedy runs differ; None when they agree throughout."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))
