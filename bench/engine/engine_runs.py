"""Measurements of seqserve's own engine: throughput, decode step vs context, continuous batching, holes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np

from bench.engine.workload import Workload, best_of
from service.engine import (
    GenerationEngine,
    GenerationRequest,
    SamplingParams,
    TokenEvent,
    load_generation_model,
)
from service.settings import Settings


def open_engine(model_dir: Path, max_slots: int, threads: int, provider: str = "cpu") -> GenerationEngine:
    # ORT's own thread options, as genai, Optimum and transformers run theirs: this compares engines at
    # equal threads. The service's default (non-spinning threads, cores less one) is measured by
    # bench/ceiling beside the service; spinning off here made 2 threads slower than one.
    settings = Settings(
        provider=provider,
        max_slots=max_slots,
        intra_op_threads=threads,
        allow_spinning=threads > 1,
        max_queue=1024,
        max_new_tokens=4096,
    )
    engine = load_generation_model(model_dir, settings)
    engine.max_prompt_tokens = engine.runner.max_len or 1 << 30  # the bench may exceed the trained context
    engine.context_length = None  # ... with its prompt and new tokens too (it measures steps, not text)
    engine.start()
    return engine


async def _generate_all(engine: GenerationEngine, prompts: list[list[int]], new_tokens: int) -> int:
    # Unary requests (stream=False), like the peers' generate calls: one hand-over per request.
    params = SamplingParams(max_new_tokens=new_tokens, ignore_eos=True)
    handles = [
        engine.submit(GenerationRequest(prompt_token_ids=tuple(p), params=params, stream=False))
        for p in prompts
    ]
    results = await asyncio.gather(*(h.result() for h in handles))
    return sum(r.usage.completion_tokens for r in results)


def engine_tokens_per_s(engine: GenerationEngine, work: Workload, batch: int, repeats: int = 1) -> float:
    """Generated tokens per second for `batch` requests submitted together (prefill included)."""
    prompts = work.prompts(batch)

    def once() -> float:
        start = time.perf_counter()
        tokens = asyncio.run(_generate_all(engine, prompts, work.new_tokens))
        assert tokens == batch * work.new_tokens
        return time.perf_counter() - start

    return batch * work.new_tokens / best_of(repeats, once)


def decode_step_ms(engine: GenerationEngine, batch: int, context: int, steps: int) -> float:
    """Fastest decode step (ms) with `batch` rows each holding `context` tokens, via the runner itself.

    The fastest, not the median: other work on the shared cores stalls this process for tens of ms at
    random, and the minimum is the step's own cost.
    """
    runner = engine.runner
    rng = np.random.default_rng(1)
    rows = np.arange(batch)
    for row in rows:  # prefill in chunks of 512 (one row at a time past the first chunk)
        ids = rng.integers(4, runner.vocab_size, size=context - 1)
        for start in range(0, len(ids), 512):
            runner.prefill([int(row)], [ids[start : start + 512]], [False])
    tokens = np.full(batch, 5, dtype=np.int64)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        runner.decode(rows, tokens)
        times.append(time.perf_counter() - start)
        runner.cache.lengths[rows] -= 1  # stay at the same context length
    for row in rows:
        runner.reset(int(row))
    return 1000.0 * min(times)


def hole_cost_ms(
    engine: GenerationEngine, active: int, holes: int, context: int, steps: int
) -> dict[str, float]:
    """Decode step with `active` packed rows vs the same rows spread with `holes` dummy rows between
    them, and the cost of copying one slot's K/V (what compaction would pay once per finish)."""
    runner = engine.runner
    rng = np.random.default_rng(2)
    spread = np.linspace(0, active + holes - 1, active).round().astype(np.int64)
    packed = np.arange(active)

    def step_ms(rows: np.ndarray) -> float:
        for row in rows:
            runner.prefill([int(row)], [rng.integers(4, runner.vocab_size, size=context)], [False])
        times = []
        tokens = np.full(len(rows), 5, dtype=np.int64)
        for _ in range(steps):
            start = time.perf_counter()
            runner.decode(rows, tokens)
            times.append(time.perf_counter() - start)
            runner.cache.lengths[rows] -= 1
        for row in range(runner.max_slots):
            runner.reset(row)
        return 1000.0 * min(times)  # fastest: see decode_step_ms

    packed_ms, spread_ms = step_ms(packed), step_ms(spread)
    copies = []
    for _ in range(steps):
        start = time.perf_counter()
        runner.copy_row(0, 1)  # what compaction does, once per hole
        copies.append(time.perf_counter() - start)
    copy_ms = 1000.0 * min(copies)
    runner.reset(1)
    return {"packed_step_ms": packed_ms, "with_holes_step_ms": spread_ms, "row_copy_ms": copy_ms}


async def _staggered(
    engine: GenerationEngine, prompts: list[list[int]], new_tokens: int, gap_s: float
) -> float:
    params = SamplingParams(max_new_tokens=new_tokens, ignore_eos=True)

    async def one(i: int, prompt: list[int]) -> int:
        await asyncio.sleep(i * gap_s)  # the arrival schedule itself, not a wait for an event
        handle = engine.submit(GenerationRequest(prompt_token_ids=tuple(prompt), params=params))
        tokens = 0
        async for event in handle:  # streaming clients, token by token
            tokens += isinstance(event, TokenEvent)
        return tokens

    start = time.perf_counter()
    tokens = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    return sum(tokens) / (time.perf_counter() - start)


def continuous_batching(
    engine: GenerationEngine, work: Workload, clients: int, repeats: int
) -> dict[str, float]:
    """Tokens/s of `clients` streaming submitters whose arrivals are spread evenly over the time one
    request takes alone (so they overlap, as live traffic does), vs that single stream; best of
    `repeats` each, alternating."""
    singles, concurrents = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        singles.append(asyncio.run(_staggered(engine, work.prompts(1), work.new_tokens, 0.0)))
        gap = (time.perf_counter() - start) / clients
        concurrents.append(
            asyncio.run(_staggered(engine, work.prompts(clients, seed=3), work.new_tokens, gap))
        )
    single, concurrent = max(singles), max(concurrents)
    gap = work.new_tokens / single / clients
    return {
        "single_stream_tok_s": single,
        "concurrent_tok_s": concurrent,
        "ratio": concurrent / single,
        "gap_s": gap,
    }
