"""Helpers for engine tests on the exporter's tiny seeded models: start an engine, collect results."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from service.engine import GenerationEngine, GenerationRequest, GenerationResult, SamplingParams
from service.engine.loader import load_generation_model
from service.settings import Settings

T = TypeVar("T")


def make_engine(model_dir: Path, **overrides: object) -> GenerationEngine:
    """A small engine: one ORT thread, few slots, 16-token prefill chunks (so chunking is exercised)."""
    options = {"intra_op_threads": 1, "max_slots": 8, "max_queue": 64, "prefill_chunk_tokens": 16}
    options.update(overrides)
    engine = load_generation_model(model_dir, Settings(**options))
    engine.start()
    return engine


def request(ids: list[int], **params: object) -> GenerationRequest:
    return GenerationRequest(prompt_token_ids=tuple(ids), params=SamplingParams(**params))


async def generate(engine: GenerationEngine, ids: list[int], **params: object) -> GenerationResult:
    return await engine.submit(request(ids, **params)).result()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)
