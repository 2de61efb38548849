"""What happens to a sampled token: detokenizing, stop strings and tokens, constraints, length limits,
the finish event, and the hand-over of events to the callers' event loops.

The scheduler calls `accept` with each step's sampled tokens and learns which samples go on and
which end; it frees their slots itself. Nothing here touches the model, the slots or the queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from service import metrics
from service.engine.request import (
    Delivery,
    FinishEvent,
    FinishReason,
    RequestHandle,
    TokenEvent,
    Usage,
)
from service.engine.sampling import SampleOutput
from service.engine.sequence import Job, Sequence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ending:
    """A sample that ends after this step, and why (the arguments of `OutputProcessor.finish`)."""

    seq: Sequence
    reason: FinishReason
    stop_reason: str | int | None = None
    error: str | None = None


class OutputProcessor:
    """Turns sampled tokens into events and collects them per event loop until `flush`."""

    def __init__(
        self,
        model_metrics: metrics.ModelMetrics,
        max_len: int | None,
        length_of: Callable[[int], int],
    ) -> None:
        self._metrics = model_metrics
        self._max_len = max_len  # the KV buffer's length (None: unbounded recurrent state)
        self._length_of = length_of  # tokens a row holds
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[RequestHandle, Delivery]]] = {}

    def accept(
        self, seqs: list[Sequence], out: SampleOutput, dead_ends: frozenset[int] = frozenset()
    ) -> list[Ending]:
        """Record each sample's new token and emit it; return the samples that end with it.

        A sample that goes on has `next_token` set (what the next decode step feeds the model).
        `dead_ends`: rows whose constraint the vocabulary cannot continue; they end with "length".
        """
        endings: list[Ending] = []
        tokens = out.tokens.tolist()
        logprobs, tops = out.logprobs, out.top_logprobs
        max_len = self._max_len
        for i, seq in enumerate(seqs):
            if dead_ends and i in dead_ends:
                # Like a constraint that max_tokens cut short: "length", with the text so far.
                endings.append(Ending(seq, "length"))
                continue
            token = tokens[i]
            job = seq.job
            gap = seq.record(token)
            if job.first_token_at is None:
                job.first_token_at = seq.last_token_at
                self._metrics.time_to_first_token.observe(seq.last_token_at - job.handle.submitted_at)
            elif gap > 0.0:
                self._metrics.inter_token_latency.observe(gap)
            # A constraint that cannot go on (a choice or schema complete, or eos taken) ends the sample.
            constraint_done = False
            if seq.matcher is not None:
                if not seq.matcher.consume_token(token):  # the mask allowed only what the grammar takes
                    endings.append(
                        Ending(seq, "error", error=f"structured output: {seq.matcher.get_error()}")
                    )
                    continue
                constraint_done = seq.matcher.is_stopped()
            if token in job.stop_ids:
                self.post(job, TokenEvent(seq.index, token, "", logprobs[i], tops[i]))
                endings.append(Ending(seq, "stop", token))
                continue
            if seq.lazy_text:  # unary and no stop strings: the text is decoded once, at the end
                seq.detokenizer.append(token)
                matched, text = None, ""
            else:
                check = seq.stopper.feed(seq.detokenizer.add(token))
                matched, text = check.matched, check.text
            self.post(job, TokenEvent(seq.index, token, text, logprobs[i], tops[i]))
            if matched is not None:
                endings.append(Ending(seq, "stop", matched))
            elif constraint_done:
                endings.append(Ending(seq, "stop"))
            elif seq.generated >= job.params.max_new_tokens or (
                max_len is not None and self._length_of(seq.slot) >= max_len
            ):
                endings.append(Ending(seq, "length"))
            else:
                seq.next_token = token
        self._metrics.generation_tokens.inc(len(seqs))
        return endings

    def finish(self, ending: Ending) -> None:
        """Emit a sample's finish event with the text still held back (the caller frees its slot)."""
        seq, reason, stop_reason = ending.seq, ending.reason, ending.stop_reason
        text = ""
        if reason in ("stop", "length") and not isinstance(stop_reason, str):
            check = seq.stopper.feed(seq.detokenizer.flush())
            text = check.text if check.matched else check.text + seq.stopper.flush()
            if check.matched:
                reason, stop_reason = "stop", check.matched
        job = seq.job
        usage = Usage(len(job.prompt), seq.generated)
        job.finished += 1  # first: a non-streaming job releases its held events with its last finish
        self.post(job, FinishEvent(seq.index, reason, text, stop_reason, usage, ending.error))
        if job.done:
            self._metrics.e2e_latency.observe(time.perf_counter() - job.handle.submitted_at)

    def finish_unadmitted(
        self, job: Job, reason: FinishReason = "cancelled", error: str | None = None
    ) -> None:
        """A request that ends without running: cancelled, the engine closing, or a start that failed."""
        for index in range(job.params.n):
            self.post(job, FinishEvent(index, reason, error=error), final=True)

    def post(self, job: Job, item: Delivery, final: bool = False) -> None:
        if not job.handle.request.stream and not (final or job.done):
            job.held.append(item)  # a unary request gets everything at once, when it is done
            return
        outbox = self._outbox.get(job.handle.loop)
        if outbox is None:
            outbox = self._outbox[job.handle.loop] = []
        if job.held:
            outbox.extend((job.handle, held) for held in job.held)
            job.held.clear()
        outbox.append((job.handle, item))

    def flush(self) -> None:
        """Hand pending events to their loops: one `call_soon_threadsafe` per loop, not one per token.

        Called just before each model run, so the woken event loop does its work while ORT computes
        with the GIL released instead of making the scheduler thread wait for the GIL.
        """
        if not self._outbox:
            return
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            try:
                loop.call_soon_threadsafe(RequestHandle.deliver_all, items)
            except RuntimeError:  # the caller's loop is closed: nobody is listening any more
                log.debug("dropping events for a closed event loop")
