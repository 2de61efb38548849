"""Which waiting requests start, and how many prompt tokens each prefilling request runs this step.

Pure functions of plain numbers, so the policy is unit-tested without a model (TGI's
`State::next_batch` plays this part there). The scheduler applies the plan; it decides nothing itself.

Admission is FIFO by slots: the head starts when its `n` samples find free slots, and nobody
overtakes it (a large `n` is not starved by a stream of small requests).

Prefill shares a per-step budget of prompt tokens. The oldest prefilling request always gets a
share (so it progresses whatever arrives after it); the other places go to the requests with the
fewest tokens left, so a short prompt that arrives while a long one is being prefilled gets its
first token within a step or two instead of waiting for the whole long prompt (vLLM's chunked
prefill shares its token budget the same way). The budget is then split max-min fairly ("water
filling"): a row that needs less than an equal share takes only what it needs and leaves the rest
to the others. Rows get at least `min_chunk` tokens each (fewer only when that finishes them), so
a step never splits the budget into many tiny model runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class WaitingRequest:
    """What the policy needs to know of a queued request."""

    samples: int  # its n: one slot each
    cancelled: bool = False


@dataclass(frozen=True)
class AdmissionPlan:
    admit: list[int]  # positions in the queue that start now, in queue order
    drop: list[int]  # cancelled positions that leave the queue without starting


def admit(waiting: Sequence[WaitingRequest], free_slots: int, cancel_all: bool = False) -> AdmissionPlan:
    """FIFO: admit from the head while each request's samples fit the free slots; skip cancelled ones
    (they are dropped); stop at the first that does not fit (no overtaking)."""
    if cancel_all:
        return AdmissionPlan([], list(range(len(waiting))))
    admitted: list[int] = []
    dropped: list[int] = []
    blocked = False
    for position, request in enumerate(waiting):
        if request.cancelled:
            dropped.append(position)
        elif not blocked and request.samples <= free_slots:
            free_slots -= request.samples
            admitted.append(position)
        else:
            blocked = True
    return AdmissionPlan(admitted, dropped)


def prefill_chunks(remaining: Sequence[int], budget: int, min_chunk: int) -> list[int]:
    """Tokens each prefilling request runs this step (0: it waits); `remaining` is oldest first.

    At most `budget // min_chunk` requests (at least one) take part: the oldest, then the shortest.
    The sum is at most `budget`, and every request with tokens left that takes part gets at least
    min(its remaining, min_chunk).
    """
    count = len(remaining)
    if count == 0 or budget <= 0:
        return [0] * count
    places = max(1, budget // max(1, min_chunk))
    by_need = sorted(range(1, count), key=lambda i: (remaining[i], i))
    chosen = [0, *by_need[: places - 1]]
    chunks = [0] * count
    # Water filling: the smallest needs are met in full while an equal share covers them.
    left = budget
    pending = sorted(chosen, key=lambda i: (remaining[i], i))
    while pending:
        share = left // len(pending)
        need = remaining[pending[0]]
        if need <= share:
            chunks[pending[0]] = need
            left -= need
            pending.pop(0)
            continue
        # Everyone left needs more than an equal share: split what is left evenly, oldest first for
        # the odd tokens.
        pending.sort()
        extra = left - share * len(pending)
        for rank, i in enumerate(pending):
            chunks[i] = min(remaining[i], share + (1 if rank < extra else 0))
        break
    return chunks
