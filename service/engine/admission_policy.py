"""Which waiting requests start, and how many prompt tokens each prefilling request runs this step.

Pure functions of plain numbers, so the policy is unit-tested without a model (TGI's
`State::next_batch` plays this part there). The scheduler applies the plan; it decides nothing itself.

Admission is FIFO by slots: the head starts when its `n` samples find free slots, and nobody
overtakes it (a large `n` is not starved by a stream of small requests).

Prefill shares a per-step budget of prompt tokens. The oldest prefilling request takes up to half
of it, so it progresses whatever arrives after it. The rest goes to the other requests with the
fewest tokens left, each taking all it needs while the budget lasts (shortest remaining first), so a
short prompt that arrives while a long one is being prefilled gets its first token within a step
instead of waiting for the whole long prompt, and a burst of equal prompts completes whole prompts
(one batched run of fresh rows) rather than splitting every prompt into slivers. A request other
than the oldest gets no chunk smaller than `min_chunk` unless that chunk finishes it, which bounds
the model runs per step; what is left over goes back to the oldest. vLLM's chunked prefill shares
its token budget between running and waiting requests in the same spirit.
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

    The sum is at most `budget`; at most `budget // min_chunk` requests (at least one) take part.
    """
    count = len(remaining)
    chunks = [0] * count
    if count == 0 or budget <= 0:
        return chunks
    places = max(1, budget // max(1, min_chunk))
    chunks[0] = min(remaining[0], max(1, budget // 2))
    left = budget - chunks[0]
    taking = 1
    for i in sorted(range(1, count), key=lambda j: (remaining[j], j)):
        if left <= 0 or taking >= places:
            break
        take = min(remaining[i], left)
        if take < remaining[i] and take < min_chunk:
            break  # a sliver that would not finish it: better left to the oldest
        chunks[i] = take
        left -= take
        taking += 1
    chunks[0] += min(left, remaining[0] - chunks[0])
    return chunks
