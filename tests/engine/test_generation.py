"""The generation engine on the exporter's tiny seeded models (Transformer and RNN).

Every comparison is exact: a request's tokens must not depend on what else shares its batch.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.engine import (
    FinishEvent,
    GenerationRequest,
    InvalidRequestError,
    PromptTooLongError,
    QueueFullError,
    SamplingParams,
    TokenEvent,
)
from tests.engine.engine_helpers import generate, make_engine, run
from tests.engine.engine_helpers import request as req

KINDS = ["llama", "lstm"]


@pytest.fixture(scope="module", params=KINDS)
def engine(request, tiny_model):
    eng = make_engine(tiny_model(request.param))
    yield eng
    run(eng.stop(5))


def prompt(seed: int, length: int, vocab: int = 40) -> list[int]:
    """Random ids of ordinary characters (ids 0-3 are the special tokens)."""
    return np.random.default_rng(seed).integers(4, vocab, size=length).tolist()


def solo(engine, ids, **params):
    result = run(generate(engine, ids, **params))
    return result.outputs[0]


def test_ragged_batch_gives_each_request_exactly_its_solo_tokens(engine):
    prompts = [prompt(1, 5), prompt(2, 23), prompt(3, 40), prompt(4, 2)]
    alone = [solo(engine, p, max_new_tokens=24, ignore_eos=True).token_ids for p in prompts]

    async def staggered():
        handles, streams = [], []
        for p in prompts:
            handle = engine.submit(req(p, max_new_tokens=24, ignore_eos=True))
            handles.append(handle)
            stream = aiter(handle)
            streams.append(stream)
            await anext(stream)  # the previous requests are mid-generation when the next joins
        return [await h.result() for h in handles]

    results = run(staggered())
    # result() consumed the rest of each stream; the first event was taken above.
    for res, expected in zip(results, alone, strict=True):
        assert res.outputs[0].token_ids == expected[1:]
    assert engine.stats().slots_used == 0


def test_reading_the_first_event_then_the_result_loses_nothing_when_all_events_are_queued(engine):
    # The consumer lags: every event is queued before it reads one. Taking the first event with
    # one iterator and then awaiting result() (another iterator) must still see every later event.
    async def go():
        handle = engine.submit(req(prompt(5, 6), max_new_tokens=12, ignore_eos=True))
        await handle.done  # set by the last event's delivery: everything is in the queue now
        first = await anext(aiter(handle))
        rest = await asyncio.wait_for(handle.result(), 10.0)
        return first, rest

    first, rest = run(go())
    assert len(rest.outputs[0].token_ids) == 11
    assert [first.token_id, *rest.outputs[0].token_ids] == solo(
        engine, prompt(5, 6), max_new_tokens=12, ignore_eos=True
    ).token_ids


def test_slots_are_reused_after_finish_and_after_cancel(engine):
    ids = prompt(9, 12)
    expected = solo(engine, ids, max_new_tokens=16, ignore_eos=True).token_ids

    async def churn():
        # Fill every slot, cancel half mid-stream, let the rest finish, then reuse all slots.
        slots = engine.stats().slots_total
        handles = [
            engine.submit(req(prompt(20 + i, 7), max_new_tokens=100, ignore_eos=True)) for i in range(slots)
        ]
        for h in handles:
            await anext(aiter(h))
        for h in handles[::2]:
            h.cancel()
        reasons = []
        for h in handles:
            res = await h.result()
            reasons.append(res.outputs[0].finish_reason)
        again = [engine.submit(req(ids, max_new_tokens=16, ignore_eos=True)) for _ in range(slots)]
        return reasons, [(await h.result()).outputs[0].token_ids for h in again]

    reasons, reused = run(churn())
    assert reasons[::2] == ["cancelled"] * len(reasons[::2])
    assert reasons[1::2] == ["length"] * len(reasons[1::2])
    assert all(tokens == expected for tokens in reused)
    assert engine.stats().slots_used == 0


def test_seeded_sampling_is_identical_with_the_batch_full_of_other_traffic(engine):
    ids = prompt(5, 9)
    params = {"temperature": 4.0, "top_k": 20, "seed": 1234, "max_new_tokens": 20, "ignore_eos": True}
    alone = solo(engine, ids, **params).token_ids

    async def crowded():
        noise = [
            engine.submit(req(prompt(40 + i, 3 + i), temperature=4.0, max_new_tokens=30)) for i in range(6)
        ]
        target = engine.submit(req(ids, **params))
        result = await target.result()
        for h in noise:
            await h.result()
        return result.outputs[0].token_ids

    assert run(crowded()) == alone
    assert solo(engine, ids, **{**params, "seed": 99}).token_ids != alone


def test_streamed_deltas_hold_back_stop_strings_and_truncate_at_them(engine):
    ids = prompt(6, 6)
    full = solo(engine, ids, max_new_tokens=40, ignore_eos=True)
    text = full.text
    assert len(text) >= 6, "the tiny model should produce some text"
    stop = text[3:6]
    cut = text[: text.index(stop)]

    async def streamed():
        deltas, finish = [], None
        async for event in engine.submit(req(ids, max_new_tokens=40, ignore_eos=True, stop=[stop])):
            if isinstance(event, TokenEvent):
                deltas.append(event.text)
                assert stop not in "".join(deltas)
            else:
                finish = event
                deltas.append(event.text)
        return deltas, finish

    deltas, finish = run(streamed())
    assert "".join(deltas) == cut
    assert (finish.finish_reason, finish.stop_reason) == ("stop", stop)


def test_max_new_tokens_ends_with_length_and_counts_usage(engine):
    ids = prompt(7, 10)
    result = run(generate(engine, ids, max_new_tokens=5, ignore_eos=True))
    assert result.outputs[0].finish_reason == "length"
    assert len(result.outputs[0].token_ids) == 5
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (10, 5)


def test_stop_token_ids_end_the_sequence(engine):
    ids = prompt(8, 10)
    tokens = solo(engine, ids, max_new_tokens=10, ignore_eos=True).token_ids
    out = solo(engine, ids, max_new_tokens=10, ignore_eos=True, stop_token_ids=[tokens[3]])
    first = tokens.index(tokens[3])
    assert out.token_ids == tokens[: first + 1]
    assert (out.finish_reason, out.stop_reason) == ("stop", tokens[3])


def test_n_samples_share_the_prompt_and_differ(engine):
    params = {"n": 3, "temperature": 4.0, "seed": 3, "max_new_tokens": 12, "ignore_eos": True}
    result = run(generate(engine, prompt(10, 8), **params))
    streams = [tuple(o.token_ids) for o in result.outputs]
    assert [o.index for o in result.outputs] == [0, 1, 2]
    assert len(set(streams)) == 3
    assert result.usage.completion_tokens == 36


def test_prompt_logprobs_do_not_depend_on_prefill_chunking(engine):
    # A prompt whose tail is the model's own greedy continuation: each of those tokens is the argmax
    # given its prefix, so it is in the top logprobs of a one-token generation from that prefix.
    base = prompt(11, 10)
    ids = base + solo(engine, base, max_new_tokens=30, ignore_eos=True).token_ids  # 40 tokens: 3 chunks
    scored = run(generate(engine, ids, max_new_tokens=1, prompt_logprobs=True)).prompt_logprobs
    assert scored[0] is None and len(scored) == len(ids)
    assert all(lp <= 0.0 for lp in scored[1:])
    for k in (12, 16, 17, 33):  # both sides of the 16-token chunk boundaries
        res = run(generate(engine, ids[:k], max_new_tokens=1, logprobs=1))
        ((best, logprob),) = res.outputs[0].top_logprobs[0]
        assert best == ids[k]
        assert logprob == pytest.approx(scored[k], abs=1e-4)


def test_cancelled_request_finishes_with_cancelled(engine):
    async def go():
        handle = engine.submit(req(prompt(12, 5), max_new_tokens=120, ignore_eos=True))
        events = []
        async for event in handle:
            events.append(event)
            if len(events) == 3:
                handle.cancel()
        return events

    events = run(go())
    assert isinstance(events[-1], FinishEvent) and events[-1].finish_reason == "cancelled"
    assert engine.stats().slots_used == 0


def test_overlong_prompt_is_refused(engine):
    limit = engine.max_prompt_tokens
    if limit >= 1 << 20:
        pytest.skip("recurrent models have no context limit")

    async def go():
        engine.submit(req([5] * (limit + 1)))

    with pytest.raises(PromptTooLongError):
        run(go())


def test_full_queue_rejects_fast(tiny_model):
    engine = make_engine(tiny_model("llama"), max_slots=1, max_queue=1, warmup=False)

    async def go():
        first = engine.submit(req(prompt(13, 4), max_new_tokens=124, ignore_eos=True))
        await anext(aiter(first))  # running, holding the only slot
        second = engine.submit(req(prompt(14, 4), max_new_tokens=2))  # waits
        with pytest.raises(QueueFullError):
            engine.submit(req(prompt(15, 4), max_new_tokens=2))
        first.cancel()
        return (await second.result()).outputs[0].finish_reason

    try:
        assert run(go()) == "length"
    finally:
        run(engine.stop(5))


def test_a_refused_request_never_reaches_the_tokenizer_or_the_scheduler(tiny_model):
    """At a full server refusals are the traffic: each must cost a check, not a tokenisation."""
    engine = make_engine(tiny_model("lstm"), max_slots=1, max_queue=0)
    encoded: list[str] = []
    real_encode = engine.tokenizer.encode

    def counting_encode(text: str, *args: object, **kwargs: object):  # the real tokenizer, counted
        encoded.append(text)
        return real_encode(text, *args, **kwargs)

    async def go() -> tuple[int, int]:
        holder = engine.submit(req(prompt(30, 4), max_new_tokens=400, ignore_eos=True))
        await anext(aiter(holder))  # the only slot is taken and the queue holds none
        engine.tokenizer.encode = counting_encode
        with pytest.raises(QueueFullError):
            engine.submit(GenerationRequest(prompt="To be, or not", params=SamplingParams(max_new_tokens=2)))
        waiting = engine.stats().waiting
        holder.cancel()
        await holder.result()
        return len(encoded), waiting

    try:
        assert run(go()) == (0, 0)
    finally:
        engine.tokenizer.encode = real_encode
        run(engine.stop(5))


def test_a_burst_is_split_exactly_into_slots_plus_queue_whenever_the_scheduler_admits(tiny_model):
    # Submitted back to back on the event loop: the scheduler thread admits some of them in between
    # or not, and either way exactly max_slots + max_queue are taken (slots are reserved under the
    # queue's lock at admission, and requests that free slots will take do not count as waiting).
    slots, queue = 3, 4
    engine = make_engine(tiny_model("llama"), max_slots=slots, max_queue=queue, warmup=False)

    async def go():
        accepted, refused = [], 0
        for i in range(4 * (slots + queue)):
            try:
                accepted.append(engine.submit(req(prompt(20 + i, 4), max_new_tokens=30, ignore_eos=True)))
            except QueueFullError:
                refused += 1
            if i % 3 == 0:
                await asyncio.sleep(0)  # let the scheduler thread take its turn at random points
        results = [await handle.result() for handle in accepted]
        return len(accepted), refused, {r.outputs[0].finish_reason for r in results}

    try:
        assert run(go()) == (slots + queue, 3 * (slots + queue), {"length"})
    finally:
        run(engine.stop(5))


def test_stop_drains_running_requests_then_refuses_new_ones(tiny_model):
    engine = make_engine(tiny_model("lstm"), max_slots=2, warmup=False)

    async def go():
        handle = engine.submit(req(prompt(16, 4), max_new_tokens=30, ignore_eos=True))
        await engine.stop(drain_timeout=30)
        result = await handle.result()
        with pytest.raises(Exception, match="not"):
            engine.submit(req(prompt(16, 4)))
        return result

    assert run(go()).outputs[0].finish_reason == "length"


def test_metrics_count_tokens_and_return_slots(engine):
    from service.metrics import REGISTRY

    labels = {"model": engine.name}

    def value(name: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    tokens_before = value("seqserve_generation_tokens_total")
    prompt_before = value("seqserve_prompt_tokens_total")
    steps_before = value("seqserve_batch_size_count")
    result = run(generate(engine, prompt(17, 6), max_new_tokens=7, ignore_eos=True))
    assert value("seqserve_generation_tokens_total") - tokens_before == result.usage.completion_tokens == 7
    assert value("seqserve_prompt_tokens_total") - prompt_before == 6
    assert value("seqserve_batch_size_count") - steps_before == 6  # the first token comes from the prefill
    assert value("seqserve_kv_slots_used") == 0.0
    assert value("seqserve_kv_slots_capacity") == engine.stats().slots_total
    assert value("seqserve_model_ready") == 1.0


def test_compacting_rows_after_early_finishers_keeps_every_token(engine):
    if not engine.runner.packs_rows:
        pytest.skip("recurrent state rows are gathered, never compacted")
    prompts = [prompt(30 + i, 10 + i) for i in range(4)]
    lengths = [10, 20, 30, 40]  # the low rows finish first and leave holes below running rows
    jobs = list(zip(prompts, lengths, strict=True))
    alone = [solo(engine, p, max_new_tokens=n, ignore_eos=True).token_ids for p, n in jobs]
    moves: list[tuple[int, int]] = []
    move_row = engine.runner.move_row

    def recording_move(src: int, dst: int) -> None:
        moves.append((src, dst))
        move_row(src, dst)

    async def together():
        handles = [engine.submit(req(p, max_new_tokens=n, ignore_eos=True)) for p, n in jobs]
        return [(await h.result()).outputs[0].token_ids for h in handles]

    engine.runner.move_row = recording_move
    try:
        assert run(together()) == alone
    finally:
        engine.runner.move_row = move_row
    assert moves, "the early finishers should have left holes to compact"
    assert all(dst < src for src, dst in moves)


def test_n_samples_copy_one_prefilled_row_and_each_continue_it_exactly(engine):
    ids = prompt(18, 37)  # several prefill chunks, then copied into the sibling rows
    expected = solo(engine, ids, max_new_tokens=12, ignore_eos=True).token_ids
    result = run(generate(engine, ids, n=3, max_new_tokens=12, ignore_eos=True))
    assert [o.token_ids for o in result.outputs] == [expected] * 3
    assert result.usage.prompt_tokens == len(ids)


def test_a_non_streaming_request_gets_the_same_events_all_at_once(engine):
    ids = prompt(19, 9)
    streamed = run(generate(engine, ids, max_new_tokens=15, ignore_eos=True))

    async def unary():
        handle = engine.submit(
            GenerationRequest(
                prompt_token_ids=tuple(ids),
                params=SamplingParams(max_new_tokens=15, ignore_eos=True),
                stream=False,
            )
        )
        await handle.done  # every event is delivered by the time the request is done...
        assert handle._queue.qsize() == 16  # ...15 tokens and the finish, in one hand-over
        return await handle.result()

    result = run(unary())
    assert result.outputs[0].token_ids == streamed.outputs[0].token_ids
    assert result.outputs[0].text == streamed.outputs[0].text


def test_prompt_and_new_tokens_must_fit_the_trained_context(engine):
    # Transformers only: past its trained context a model's text degrades (vLLM refuses it too).
    context = engine.context_length
    ids = prompt(18, 8)

    async def go():
        if context is None:  # recurrent: no trained context, only the server's max_new_tokens
            return engine.submit(req(ids, max_new_tokens=engine.max_new_tokens)).cancel()
        with pytest.raises(InvalidRequestError) as caught:
            engine.submit(req(ids, max_new_tokens=context - len(ids) + 1))
        assert caught.value.field == "max_new_tokens"
        assert f"at most {context - len(ids)}" in caught.value.rule
        engine.submit(req(ids, max_new_tokens=context - len(ids))).cancel()
        # A prompt that fills the context still gets the one token its last position predicts.
        full = prompt(19, context)
        engine.submit(req(full, max_new_tokens=1)).cancel()
        with pytest.raises(InvalidRequestError):
            engine.submit(req(full, max_new_tokens=2))

    run(go())


def test_a_request_that_waits_past_its_queue_time_leaves_the_queue(tiny_model):
    engine = make_engine(
        tiny_model("lstm"), max_slots=1, warmup=False, max_queue_time_s=30, max_new_tokens=10**6
    )

    async def go():
        holder = engine.submit(req(prompt(21, 4), max_new_tokens=100_000, ignore_eos=True))
        await anext(aiter(holder))  # running: the only slot is taken
        impatient = engine.submit(
            GenerationRequest(
                prompt_token_ids=tuple(prompt(22, 4)), params=SamplingParams(n=1), queue_timeout=0.2
            )
        )
        patient = engine.submit(req(prompt(23, 4), max_new_tokens=3))  # the engine's 30 s apply
        timed_out = await impatient.result()
        waiting_after = engine.stats().waiting
        holder.cancel()
        return timed_out, waiting_after, await patient.result()

    try:
        timed_out, waiting_after, patient = run(go())
    finally:
        run(engine.stop(5))
    assert timed_out.outputs[0].finish_reason == "timeout" and timed_out.outputs[0].token_ids == []
    assert "waited 0.2 s in the queue" in (timed_out.outputs[0].error or "")
    assert waiting_after == 1  # only the patient one is left waiting
    assert patient.outputs[0].finish_reason == "length" and len(patient.outputs[0].token_ids) == 3
    assert engine.stats().slots_used == 0
