"""Fair prefill: prompts are prefilled in chunks that share a per-step token budget, so a short
request's first token does not wait for a long prompt admitted before it, and chunking changes no
token (greedy tokens equal an unchunked prefill and torch's, for a Transformer and a recurrent model).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from harness.tiny_models import load_tiny_torch_model, torch_reference_greedy
from service.engine import GenerationEngine, PromptTooLongError, TokenEvent
from service.settings import Settings
from tests.engine.engine_helpers import make_engine, request, run

NEW_TOKENS = 12
LONG_PROMPT = {"llama": 1500, "lstm": 3000}  # dozens of 16-token steps, far more than a short prompt needs


def prompts_of(lengths: tuple[int, ...], seed: int = 5) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(4, 40, size=n).tolist() for n in lengths]


def greedy_together(engine: GenerationEngine, prompts: list[list[int]]) -> list[list[int]]:
    async def go():
        handles = [engine.submit(request(p, max_new_tokens=NEW_TOKENS, ignore_eos=True)) for p in prompts]
        return await asyncio.gather(*(h.result() for h in handles))

    try:
        return [r.outputs[0].token_ids for r in run(go())]
    finally:
        run(engine.stop(5))


@pytest.mark.parametrize("kind", ["llama", "lstm"])
def test_chunked_prefill_gives_the_tokens_of_an_unchunked_one_and_of_torch(kind, tiny_model):
    folder = tiny_model(kind)
    prompts = prompts_of((5, 37, 100, 21))
    model = load_tiny_torch_model(folder)
    expected = [torch_reference_greedy(model, p, NEW_TOKENS) for p in prompts]
    # 16 tokens a step shared by four prompts: chunks of 2-16 tokens, interleaved across the requests.
    chunked = greedy_together(make_engine(folder, warmup=False, prefill_chunk_tokens=16), prompts)
    whole = greedy_together(make_engine(folder, warmup=False, prefill_chunk_tokens=4096), prompts)
    assert chunked == whole == expected


async def first_event(handle) -> object:
    async for event in handle:
        return event
    raise AssertionError("no event")


@pytest.mark.parametrize("kind", ["llama", "lstm"])
def test_a_short_request_gets_its_first_token_while_a_long_prompt_is_still_prefilling(kind, tiny_model):
    engine = make_engine(tiny_model(kind), warmup=False, prefill_chunk_tokens=16)
    engine.max_prompt_tokens = 1 << 20
    engine.context_length = None  # the tiny llama's cache holds more than its trained context
    long_prompt, short_prompt = prompts_of((LONG_PROMPT[kind], 6))

    async def go() -> None:
        long_handle = engine.submit(request(long_prompt, max_new_tokens=1, ignore_eos=True))
        short_handle = engine.submit(request(short_prompt, max_new_tokens=2, ignore_eos=True))
        long_first = asyncio.ensure_future(first_event(long_handle))
        short_first = asyncio.ensure_future(first_event(short_handle))
        done, _ = await asyncio.wait({long_first, short_first}, timeout=60, return_when="FIRST_COMPLETED")
        assert short_first in done and long_first not in done
        assert isinstance(short_first.result(), TokenEvent)
        # The long one still completes, with its token.
        assert isinstance(await asyncio.wait_for(long_first, 60), TokenEvent)
        await asyncio.wait_for(asyncio.gather(long_handle.done, short_handle.done), 60)

    try:
        run(go())
    finally:
        run(engine.stop(5))


def test_a_recurrent_model_has_a_default_prompt_limit_naming_the_field(tiny_model):
    # A recurrent model has no context to bound its prompt: the setting's default does.
    engine = make_engine(tiny_model("lstm"), warmup=False)
    try:
        assert engine.max_prompt_tokens == Settings().recurrent_max_prompt_tokens
    finally:
        run(engine.stop(5))
    engine = make_engine(tiny_model("lstm"), warmup=False, recurrent_max_prompt_tokens=64)

    async def submit(ids: list[int]) -> None:
        engine.submit(request(ids, max_new_tokens=1))

    try:
        with pytest.raises(PromptTooLongError) as refused:
            run(submit(prompts_of((65,))[0]))
        assert refused.value.field == "prompt_token_ids" and "64" in refused.value.rule
        run(submit(prompts_of((64,))[0]))  # at the limit: accepted
    finally:
        run(engine.stop(5))
    # The general setting, when given, bounds recurrent models too.
    engine = make_engine(tiny_model("lstm"), warmup=False, max_prompt_tokens=100)
    try:
        assert engine.max_prompt_tokens == 100
    finally:
        run(engine.stop(5))


@pytest.mark.parametrize("kind", ["llama", "lstm"])
def test_a_freed_slot_is_refilled_while_the_batch_keeps_decoding(kind, tiny_model):
    """With two slots and three requests, the third takes the slot the shortest frees, so it finishes
    before the longest one (not after the whole batch drains)."""
    engine = make_engine(tiny_model(kind), warmup=False, max_slots=2)
    prompt = prompts_of((6,))[0]

    async def go() -> list[str]:
        lengths = {"long": 48, "medium": 8, "short": 4}
        handles = {
            name: engine.submit(request(prompt, max_new_tokens=n, ignore_eos=True))
            for name, n in lengths.items()
        }
        tasks = {asyncio.ensure_future(h.result()): name for name, h in handles.items()}
        order = []
        for done in asyncio.as_completed(tasks, timeout=60):
            result = await done
            order.append(next(name for name, h in handles.items() if h.request_id == result.request_id))
        return order

    try:
        order = run(go())
    finally:
        run(engine.stop(5))
    assert order.index("short") < order.index("long"), order
