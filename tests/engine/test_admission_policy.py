"""The admission policy on its own: FIFO admission by slots, and the per-step prompt-token budget
shared among the requests being prefilled (up to half to the oldest, the rest shortest first)."""

from __future__ import annotations

import pytest

from service.engine.admission_policy import WaitingRequest, admit, prefill_chunks


def test_admits_from_the_head_while_the_samples_fit():
    waiting = [WaitingRequest(1), WaitingRequest(2), WaitingRequest(1)]
    plan = admit(waiting, free_slots=3)
    assert plan.admit == [0, 1] and plan.drop == []


def test_nobody_overtakes_a_head_that_does_not_fit():
    plan = admit([WaitingRequest(4), WaitingRequest(1)], free_slots=3)
    assert plan.admit == [] and plan.drop == []


def test_cancelled_requests_are_dropped_wherever_they_wait():
    cancelled = WaitingRequest(1, cancelled=True)
    waiting = [cancelled, WaitingRequest(1), WaitingRequest(8), cancelled]
    plan = admit(waiting, free_slots=2)
    assert plan.admit == [1] and plan.drop == [0, 3]


def test_cancel_all_drops_the_whole_queue_and_admits_nothing():
    plan = admit([WaitingRequest(1), WaitingRequest(1)], free_slots=8, cancel_all=True)
    assert plan.admit == [] and plan.drop == [0, 1]


def test_one_prompt_takes_the_whole_budget():
    assert prefill_chunks([10_000], budget=512, min_chunk=64) == [512]
    assert prefill_chunks([100], budget=512, min_chunk=64) == [100]


def test_a_short_prompt_behind_a_long_one_is_prefilled_whole_at_once():
    # The long prompt came first: it keeps a share, the short one needs less than half and gets it all.
    assert prefill_chunks([100_000, 20], budget=512, min_chunk=64) == [492, 20]


def test_a_burst_of_equal_prompts_completes_whole_prompts_in_arrival_order():
    # Four 128-token prompts fit 512: all four whole, in one step (not eight half prompts).
    assert prefill_chunks([128] * 6, budget=512, min_chunk=64) == [128, 128, 128, 128, 0, 0]


def test_long_prompts_give_the_oldest_half_and_the_next_the_rest():
    assert prefill_chunks([5000, 5000, 5000], budget=512, min_chunk=64) == [256, 256, 0]


def test_the_oldest_always_progresses_and_the_shortest_fill_the_rest():
    # 4 places (512 // 128): the oldest, then the shortest while the budget lasts.
    remaining = [9000, 300, 50, 8000, 60, 7000]
    assert prefill_chunks(remaining, budget=512, min_chunk=128) == [256, 146, 50, 0, 60, 0]


def test_a_sliver_is_not_handed_out_the_oldest_takes_it():
    # After the oldest's half and a 200-token prompt, 56 tokens are left: less than min_chunk and
    # not enough to finish the 1000-token prompt, so they go to the oldest.
    assert prefill_chunks([9000, 1000, 200], budget=512, min_chunk=64) == [312, 0, 200]


@pytest.mark.parametrize(
    "remaining",
    [[1], [7, 7, 7, 7, 7, 7, 7, 7, 7, 7], [3000, 1, 2, 3], [40, 40, 40], list(range(1, 30))],
)
@pytest.mark.parametrize("budget,min_chunk", [(16, 2), (512, 64), (100, 30)])
def test_chunks_respect_the_budget_the_needs_and_the_smallest_share(remaining, budget, min_chunk):
    chunks = prefill_chunks(remaining, budget, min_chunk)
    assert len(chunks) == len(remaining)
    assert sum(chunks) <= budget
    assert all(0 <= c <= r for c, r in zip(chunks, remaining, strict=True))
    assert chunks[0] == min(remaining[0], budget) or chunks[0] >= min(remaining[0], min_chunk)
    taking = [c for c in chunks if c]
    assert taking and len(taking) <= max(1, budget // min_chunk)
    assert all(c >= min(r, min_chunk) for c, r in zip(chunks, remaining, strict=True) if c)
    # Nothing is left unused while a taking row still needs tokens.
    if any(c < r for c, r in zip(chunks, remaining, strict=True) if c):
        assert sum(chunks) == budget


def test_no_prompt_and_no_budget():
    assert prefill_chunks([], budget=512, min_chunk=64) == []
    assert prefill_chunks([10, 20], budget=0, min_chunk=64) == [0, 0]
