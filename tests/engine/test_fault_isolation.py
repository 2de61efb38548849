"""Per-request fault isolation: when a batched model run raises, each of its rows is re-run alone;
only the row that fails again ends (finish reason `error`), the engine stays ready, and every other
request gets exactly the tokens of a fault-free run (greedy and seeded sampling alike)."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future

import numpy as np
import pytest

from service.engine import GenerationResult
from service.engine.loader import load_generation_model
from service.engine.masks import MaskBatch
from service.settings import Settings
from tests.engine.engine_helpers import make_engine, run
from tests.engine.engine_helpers import request as req
from tests.engine.fault_injection import FaultInjector, InjectedFault

KINDS = ["llama", "lstm"]
NEW_TOKENS = 16
BAD = 1  # which of the requests below the fault hits
# A long first prompt is prefilled in two chunks (16-token chunks), so the failing prefill call also
# holds a row with cached tokens: a separate group run before the failing one.
PROMPTS = [(1, 30), (2, 12), (3, 12)]
PARAMS = [
    {"max_new_tokens": NEW_TOKENS, "ignore_eos": True},
    {"max_new_tokens": NEW_TOKENS, "ignore_eos": True},
    {"max_new_tokens": NEW_TOKENS, "ignore_eos": True, "temperature": 0.9, "seed": 7},
]


def prompt(seed: int, length: int) -> list[int]:
    return np.random.default_rng(seed).integers(4, 40, size=length).tolist()


async def generate_together(engine, prompts: list[list[int]]) -> list[GenerationResult]:
    handles = [engine.submit(req(p, **params)) for p, params in zip(prompts, PARAMS, strict=True)]
    return list(await asyncio.gather(*(h.result() for h in handles)))


def tokens(result: GenerationResult) -> list[int]:
    return result.outputs[0].token_ids


def pick_poison(candidates: list[int], avoid: set[int]) -> int:
    usable = [t for t in candidates if t not in avoid]
    assert usable, "no token tells the failing request apart; change the prompts"
    return usable[0]


@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_failing_row_ends_alone_and_the_others_keep_their_fault_free_tokens(tiny_model, kind, phase):
    engine = make_engine(tiny_model(kind))
    try:
        prompts = [prompt(seed, length) for seed, length in PROMPTS]
        clean = run(generate_together(engine, prompts))
        others = [i for i in range(len(prompts)) if i != BAD]
        seen_by_others = {t for i in others for t in prompts[i] + tokens(clean[i])}
        if phase == "prefill":  # a token of the failing prompt that no other run ever feeds
            poison = pick_poison(prompts[BAD], seen_by_others)
        else:  # a token the failing request generates and then feeds back, and nobody else feeds
            poison = pick_poison(tokens(clean[BAD])[:-1], seen_by_others | set(prompts[BAD]))
        injector = FaultInjector(engine.runner, poison)
        faulty = run(generate_together(engine, prompts))

        assert injector.faults >= 2  # the batched run, then the row again on its own
        for i in others:
            assert tokens(faulty[i]) == tokens(clean[i])
            assert faulty[i].outputs[0].finish_reason == "length"
        failed = faulty[BAD].outputs[0]
        assert failed.finish_reason == "error"
        assert "injected fault" in (failed.error or "")
        if phase == "prefill":
            assert failed.token_ids == []
        else:  # its tokens up to the one whose decode step failed
            cut = tokens(clean[BAD]).index(poison) + 1
            assert failed.token_ids == tokens(clean[BAD])[:cut]
        # The engine is still serving: the same requests without the poison run as before.
        assert engine.ready
        again = run(generate_together(engine, [prompts[i] if i != BAD else prompts[0] for i in range(3)]))
        assert [tokens(again[i]) for i in others] == [tokens(clean[i]) for i in others]
    finally:
        run(engine.stop(5))


def greedy_rows(runner, rows: np.ndarray, steps: int) -> np.ndarray:
    """`steps` greedy tokens for each row, decoded together."""
    logits, out = runner.decode(rows, np.full(len(rows), 5)), []
    for _ in range(steps):
        out.append(logits.argmax(axis=1))
        logits = runner.decode(rows, out[-1])
    return np.stack(out)


@pytest.mark.parametrize("kind", KINDS)
def test_a_failed_prefill_call_leaves_every_row_as_it_was(tiny_model, kind):
    """The call holds two groups (a row with cached tokens runs apart from fresh rows; for an RNN,
    rows of different chunk lengths); the second fails after the first ran. Re-running the rows
    alone must then continue from the state they had before the call."""
    settings = Settings(intra_op_threads=1, max_slots=4, max_queue=4)
    faulty, reference = (load_generation_model(tiny_model(kind), settings).runner for _ in range(2))
    head, rest, fresh = prompt(5, 5), prompt(6, 4), prompt(7, 6)
    reference.prefill([0], [np.array(head)], [False])
    reference.prefill([0], [np.array(rest)], [False])
    reference.prefill([2], [np.array(fresh)], [False])
    expected = greedy_rows(reference, np.array([0, 2]), 8)
    poison = pick_poison(
        list(range(4, faulty.vocab_size)), {5, *head, *rest, *fresh, *expected.ravel().tolist()}
    )

    faulty.prefill([0], [np.array(head)], [False])
    FaultInjector(faulty, poison)
    chunks = [np.array(rest), np.full(6, poison), np.array(fresh)]
    with pytest.raises(InjectedFault):
        faulty.prefill([0, 1, 2], chunks, [False] * 3)
    assert [faulty.length(row) for row in range(3)] == [len(head), 0, 0]
    faulty.prefill([0], [chunks[0]], [False])
    faulty.prefill([2], [chunks[2]], [False])
    np.testing.assert_array_equal(greedy_rows(faulty, np.array([0, 2]), 8), expected)


def test_masks_of_the_rows_left_after_a_failed_row_keep_their_own_masks():
    """A step's constrained rows 0, 2 and 3 (of 4); row 2 fails: rows 0 and 3 become 0 and 2 of the
    step that goes on, each with its own mask."""
    vocab = 40
    bitmask = np.zeros((3, 2), dtype=np.int32)
    for j, token in enumerate((5, 6, 7)):  # each constrained row allows one token
        bitmask[j, token // 32] |= 1 << (token % 32)
    done: Future[np.ndarray] = Future()
    done.set_result(bitmask)
    masks = MaskBatch(np.array([0, 2, 3]), done, np.ones(vocab, dtype=bool))

    left = masks.without([2])
    assert left is not None and left.rows.tolist() == [0, 2]
    assert [np.flatnonzero(row).tolist() for row in left.allowed()] == [[5], [7]]
    last = left.without([0])  # the rows of a step that lost another row later
    assert last is not None and last.rows.tolist() == [1]
    assert np.flatnonzero(last.allowed()[0]).tolist() == [7]
    assert masks.without([0, 2, 3]) is None


@pytest.mark.parametrize("kind", KINDS)
def test_a_request_whose_start_fails_ends_with_the_error_and_gives_its_slots_back(tiny_model, kind):
    """A fault while a request takes its slots (here the slot reset; in practice also a grammar
    matcher) must end that request with an error, not leave its caller waiting on slots it holds."""
    engine = make_engine(tiny_model(kind), max_slots=2)
    try:
        real_reset, faults = engine.runner.reset, []

        def reset_once_faulty(slot: int) -> None:
            if not faults:
                faults.append(slot)
                raise InjectedFault("injected fault at start")
            real_reset(slot)

        engine.runner.reset = reset_once_faulty
        params = {"max_new_tokens": 4, "ignore_eos": True}

        async def one(seed: int) -> GenerationResult:
            return await asyncio.wait_for(engine.submit(req(prompt(seed, 6), n=2, **params)).result(), 30)

        failed = run(one(1))
        assert [out.finish_reason for out in failed.outputs] == ["error", "error"]
        assert all("injected fault at start" in (out.error or "") for out in failed.outputs)
        # Both slots are free again: two requests of two samples each complete one after the other.
        for seed in (2, 3):
            done = run(one(seed))
            assert [len(out.token_ids) for out in done.outputs] == [4, 4]
        assert engine.ready
    finally:
        run(engine.stop(5))
