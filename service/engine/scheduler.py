"""Continuous batching: one thread admits, prefills, decodes one step for every slot, samples and emits.

ORT releases the GIL while it runs, so the thread computes while the event loop serves sockets.
New requests join the running batch at the next iteration; finished and cancelled ones free their
slots at once. When there is nothing to do the thread waits on a condition (no polling).

A model run that raises does not end the batch: each of its rows is re-run once on its own, and only
the rows that fail again end, with finish reason "error" (`_rows_alone`). vLLM stops the whole
instance on any fault and TGI drops the whole batch; one bad request should cost only itself.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np
from tokenizers import Tokenizer

from service import metrics
from service.engine.errors import EngineStoppedError, QueueFullError
from service.engine.kv_cache import SlotAllocator
from service.engine.masks import MaskBatch, MaskWorker
from service.engine.request import (
    Delivery,
    FinishEvent,
    FinishReason,
    PromptLogprobs,
    RequestHandle,
    TokenEvent,
    Usage,
)
from service.engine.runner import ModelRunner
from service.engine.sampling import prompt_logprobs, sample
from service.engine.sequence import Job, Sequence, request_rngs

log = logging.getLogger(__name__)


class Scheduler:
    """Owns the slots and the waiting queue of one model; all model calls happen on its thread."""

    def __init__(
        self,
        runner: ModelRunner,
        tokenizer: Tokenizer,
        model_name: str,
        max_queue: int,
        prefill_chunk_tokens: int,
        text_tokens: np.ndarray | None = None,
    ) -> None:
        self.runner = runner
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.max_queue = max_queue
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.slots = SlotAllocator(runner.max_slots)
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._running: list[Job] = []
        self._prefilling: list[Sequence] = []
        self._decoding: list[Sequence] = []
        self._accepting = True
        self._cancel_all = False
        self._attention = False  # set (under the lock) by submit, cancel and close
        self._maybe_holes = False  # a slot was freed since the last compaction
        self._thread: threading.Thread | None = None
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[RequestHandle, Delivery]]] = {}
        self._decode_cache: dict[bool, dict[int, str]] = {True: {}, False: {}}
        self._by_slot: dict[int, Sequence] = {}
        self._metrics = metrics.ModelMetrics(model_name)
        self._metrics.slots_total.set(runner.max_slots)
        self._gauges: tuple[int, int, int] | None = None
        # Structured outputs' masks, computed in parallel; `text_tokens`: what a grammar may ever allow.
        text = text_tokens if text_tokens is not None else np.ones(runner.vocab_size, dtype=bool)
        self._masks = MaskWorker(text, model_name)

    # ---- called from the event loop -------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Queue a job; fails fast when the queue is full or the engine is not accepting work."""
        with self._cond:
            if not self._accepting or self._thread is None:
                raise EngineStoppedError(f"model {self.model_name!r} is not accepting requests")
            # Waiting jobs that free slots will take at the next iteration do not really wait: the
            # bound is on the rest. Slots are reserved at admission, under this lock, so `free` is
            # exact here and a burst is split exactly into slots + queue admitted, the rest refused.
            self.check_room()
            self._waiting.append(job)
            self._attention = True
            self._cond.notify()

    def expire(self, job: Job) -> bool:
        """Take a job out of the queue if it is still waiting (its queue time ran out); False when it
        was admitted or dropped meanwhile. Its caller delivers the finish: nothing was posted yet."""
        with self._cond:
            for position, waiting in enumerate(self._waiting):
                if waiting is job:  # identity: jobs hold arrays, so == would not do
                    del self._waiting[position]
                    break
            else:
                return False
        self._metrics.queue_time.observe(time.perf_counter() - job.handle.submitted_at)
        return True

    def check_room(self) -> None:
        """Raise QueueFullError when a new job would find neither a free slot nor a queue place.

        Called under the lock by `submit` (exact), and without it before a request is tokenised (a
        racy but cheap early refusal: at a full server, refusals are the traffic to make cheap).
        """
        if not self.has_room:
            raise QueueFullError(f"model {self.model_name!r}: waiting queue is full ({self.max_queue})")

    @property
    def has_room(self) -> bool:
        return len(self._waiting) < self.max_queue + self.slots.free

    def wake(self) -> None:
        """Something changed (a cancel): the next iteration takes the full path."""
        with self._cond:
            self._attention = True
            self._cond.notify()

    def counts(self) -> tuple[int, int]:
        with self._cond:
            return len(self._running), len(self._waiting)

    def start(self) -> None:
        self.runner.session.before_run = self._flush
        self._thread = threading.Thread(target=self._run, name=f"scheduler-{self.model_name}", daemon=True)
        self._thread.start()

    def close(self, cancel: bool) -> None:
        """Stop accepting; with `cancel`, also end every queued and running request now."""
        with self._cond:
            self._accepting = False
            self._cancel_all = self._cancel_all or cancel
            self._attention = True
            self._cond.notify()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- the scheduler thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            # Fast path: only running sequences and nothing new (no submit, cancel or close since the
            # last look) means one more decode step, without the lock and the queue bookkeeping.
            steady = not self._attention and self._decoding and not self._prefilling
            admitted: list[Job] = []
            if not steady:
                with self._cond:
                    while not (self._waiting or self._running or not self._accepting):
                        self._cond.wait()
                    if not self._accepting and not self._waiting and not self._running:
                        break
                    self._attention = False
                    cancel_all = self._cancel_all
                    admitted = [] if cancel_all else self._admit_locked()
                    dropped = self._drop_cancelled_waiting_locked(cancel_all)
                for job in dropped:
                    self._finish_unadmitted(job)
            try:
                for job in admitted:
                    self._start_job(job)
                if not steady:
                    self._drop_cancelled_running(cancel_all)
                self._prefill_step()
                self._compact()
                self._decode_step()
            except Exception as exc:  # a fault outside the model runs (those are isolated per row)
                log.exception("model %s failed a step", self.model_name)
                self._fail_all(repr(exc))
            self._update_gauges()  # before the events go out, so a caller who got its result sees them
            if not (self._decoding or self._prefilling):
                self._flush()  # otherwise the next model run flushes (runtime.ModelSession.before_run)
        self._update_gauges()
        self._flush()
        self._masks.close()

    def _admit_locked(self) -> list[Job]:
        """FIFO: admit from the head while its n samples fit into free slots (no overtaking)."""
        admitted = []
        free = self.slots.free
        while self._waiting:
            job = self._waiting[0]
            if job.handle.cancelled:
                break  # dropped just below
            if job.params.n > free:
                break
            free -= job.params.n
            job.slots = [self.slots.allocate() for _ in range(job.params.n)]
            admitted.append(self._waiting.popleft())
        self._running.extend(admitted)
        return admitted

    def _drop_cancelled_waiting_locked(self, cancel_all: bool) -> list[Job]:
        dropped = [j for j in self._waiting if cancel_all or j.handle.cancelled]
        if dropped:
            self._waiting = deque(j for j in self._waiting if not (cancel_all or j.handle.cancelled))
        return dropped

    def _start_job(self, job: Job) -> None:
        job.admitted_at = time.perf_counter()
        self._metrics.queue_time.observe(job.admitted_at - job.handle.submitted_at)
        rngs = request_rngs(job.params.seed, job.params.n)
        for index, (rng, slot) in enumerate(zip(rngs, job.slots, strict=True)):
            self.runner.reset(slot)
            cache = self._decode_cache[job.params.skip_special_tokens]
            seq = Sequence(job, index, slot, self.tokenizer, self.runner.vocab_size, rng, cache)
            job.sequences.append(seq)
            self._by_slot[slot] = seq
        # Only the first sample is prefilled; the others copy its row when it is done.
        self._prefilling.append(job.sequences[0])

    def _prefill_step(self) -> None:
        """Prefill up to `prefill_chunk_tokens` prompt tokens (at least one chunk), oldest first."""
        if not self._prefilling:
            return
        budget = self.prefill_chunk_tokens
        rows, chunks, want_all, seqs = [], [], [], []
        for seq in self._prefilling:
            if budget <= 0:
                break
            start = seq.prefilled
            take = min(len(seq.job.prompt) - start, budget)
            rows.append(seq.slot)
            chunks.append(seq.job.prompt[start : start + take])
            want_all.append(seq.job.params.prompt_logprobs and seq.index == 0)
            seqs.append(seq)
            budget -= take
        # The samples this chunk completes (in the order `ready` gets below): their first masks are
        # computed while the model runs.
        finishing = [
            s
            for seq, chunk in zip(seqs, chunks, strict=True)
            if seq.prefilled + len(chunk) >= len(seq.job.prompt)
            for s in (seq, *seq.job.sequences[1:])
        ]
        masks = self._masks.start([s.matcher for s in finishing])
        try:
            logits = self.runner.prefill(rows, chunks, want_all)
        except Exception as exc:
            logits = self._rows_alone(
                exc, len(rows), lambda i: self.runner.prefill([rows[i]], [chunks[i]], [want_all[i]])[0]
            )
        finally:
            _settle(masks)
        failed = [(seq, out) for seq, out in zip(seqs, logits, strict=True) if isinstance(out, str)]
        if failed:
            lost = {id(s) for seq, _ in failed for s in seq.job.sequences}
            if masks is not None:
                masks = masks.without([i for i, s in enumerate(finishing) if id(s) in lost])
            finishing = [s for s in finishing if id(s) not in lost]
            for seq, error in failed:  # its samples end too: they were to copy its row
                for sample in seq.job.sequences:
                    self._finish(sample, "error", error=error)
        ready: list[tuple[Sequence, np.ndarray]] = []
        for seq, chunk, out, all_rows in zip(seqs, chunks, logits, want_all, strict=True):
            if isinstance(out, str):
                continue
            if all_rows:
                job = seq.job
                scores = prompt_logprobs(out, chunk, job.last_prompt_logits)
                job.prompt_logprobs = (job.prompt_logprobs or [None]) + scores
                job.last_prompt_logits = out[-1]
            seq.prefilled += len(chunk)
            if seq.prefill_done:
                ready.append((seq, out[-1]))
                for sibling in seq.job.sequences[1:]:
                    self.runner.copy_row(seq.slot, sibling.slot)
                    sibling.prefilled = seq.prefilled
                    ready.append((sibling, out[-1]))
        done = {id(s) for s, _ in ready}
        self._prefilling = [s for s in self._prefilling if id(s) not in done]
        for seq, _ in ready:
            job = seq.job
            if seq.index == 0:
                self._metrics.prompt_tokens.inc(len(job.prompt))
                if job.params.prompt_logprobs:
                    self._post(job, PromptLogprobs(job.prompt_logprobs or [None]))
        if ready:
            assert [id(s) for s, _ in ready] == [id(s) for s in finishing]
            self._sample_and_emit([s for s, _ in ready], np.stack([lg for _, lg in ready]), masks)

    def _compact(self) -> None:
        """Fill holes below the highest used row by moving that row down, unless waiting requests
        will fill them at the next admission anyway."""
        if not self._maybe_holes or not self.runner.packs_rows or self._waiting:
            return
        self._maybe_holes = False
        while (move := self.slots.compaction_move()) is not None:
            src, dst = move
            self.runner.move_row(src, dst)
            seq = self._by_slot.pop(src)
            seq.slot = dst
            self._by_slot[dst] = seq

    def _decode_step(self) -> None:
        if not self._decoding:
            return
        seqs = list(self._decoding)
        rows = np.array([s.slot for s in seqs], dtype=np.int64)
        tokens = np.array([s.next_token for s in seqs], dtype=np.int64)
        # Each constrained row's matcher has taken next_token already: its next mask is computed on
        # the mask thread while the model runs (both release the GIL).
        masks = self._masks.start([s.matcher for s in seqs])
        failed: dict[int, str] = {}
        try:
            logits = self.runner.decode(rows, tokens)
        except Exception as exc:
            each = self._rows_alone(
                exc, len(rows), lambda i: self.runner.decode(rows[i : i + 1], tokens[i : i + 1])[0]
            )
            failed = {i: out for i, out in enumerate(each) if isinstance(out, str)}
            logits = [out for out in each if not isinstance(out, str)]
        finally:
            _settle(masks)
        if failed:
            for i, error in failed.items():
                self._finish(seqs[i], "error", error=error)
            masks = masks.without(list(failed)) if masks is not None else None
            seqs = [s for i, s in enumerate(seqs) if i not in failed]
        if not seqs:
            return
        logits = np.stack(logits) if isinstance(logits, list) else logits
        self._metrics.batch_size.observe(len(seqs))
        self._sample_and_emit(seqs, logits, masks)

    def _sample_and_emit(self, seqs: list[Sequence], logits: np.ndarray, masks: MaskBatch | None) -> None:
        allowed, dead_ends = None, frozenset()
        if masks is not None:
            rows, ok = masks.rows, masks.allowed()
            stuck = ~ok.any(axis=1)
            if stuck.any():  # the vocabulary cannot continue the constraint (see _finish below)
                ok[stuck] = True
                dead_ends = frozenset(rows[stuck].tolist())
            allowed = (rows, ok)
        out = sample(logits, [s.row for s in seqs], allowed)
        max_len = self.runner.max_len
        for i, seq in enumerate(seqs):
            if i in dead_ends:
                # Like a constraint that max_tokens cut short: "length", with the text so far.
                self._finish(seq, "length")
                continue
            token = int(out.tokens[i])
            job = seq.job
            gap = seq.record(token)
            now = seq.last_token_at
            if job.first_token_at is None:
                job.first_token_at = now
                self._metrics.time_to_first_token.observe(now - job.handle.submitted_at)
            elif gap > 0.0:
                self._metrics.inter_token_latency.observe(gap)
            # A constraint that cannot go on (a choice or schema complete, or eos taken) ends the sample.
            constraint_done = False
            if seq.matcher is not None:
                if not seq.matcher.consume_token(token):  # the mask allowed only what the grammar takes
                    self._finish(seq, "error", error=f"structured output: {seq.matcher.get_error()}")
                    continue
                constraint_done = seq.matcher.is_stopped()
            if token in job.stop_ids:
                self._emit(seq, TokenEvent(seq.index, token, "", out.logprobs[i], out.top_logprobs[i]))
                self._finish(seq, "stop", token)
                continue
            if seq.lazy_text:  # unary and no stop strings: the text is decoded once, at the end
                seq.detokenizer.append(token)
                matched, text = None, ""
            else:
                check = seq.stopper.feed(seq.detokenizer.add(token))
                matched, text = check.matched, check.text
            self._emit(seq, TokenEvent(seq.index, token, text, out.logprobs[i], out.top_logprobs[i]))
            if matched is not None:
                self._finish(seq, "stop", matched)
            elif constraint_done:
                self._finish(seq, "stop")
            elif seq.generated >= job.params.max_new_tokens or (
                max_len is not None and self.runner.length(seq.slot) >= max_len
            ):
                self._finish(seq, "length")
            else:
                if seq.next_token is None:
                    self._decoding.append(seq)
                seq.next_token = token
        self._metrics.generation_tokens.inc(len(seqs))

    def _finish(
        self,
        seq: Sequence,
        reason: FinishReason,
        stop_reason: str | int | None = None,
        error: str | None = None,
    ) -> None:
        if seq.finished:
            return
        seq.finished = True
        text = ""
        if reason in ("stop", "length") and not isinstance(stop_reason, str):
            check = seq.stopper.feed(seq.detokenizer.flush())
            text = check.text if check.matched else check.text + seq.stopper.flush()
            if check.matched:
                reason, stop_reason = "stop", check.matched
        job = seq.job
        usage = Usage(len(job.prompt), seq.generated)
        job.finished += 1  # first: a non-streaming job releases its held events with its last finish
        self._emit(seq, FinishEvent(seq.index, reason, text, stop_reason, usage, error))
        if seq.next_token is not None:
            self._decoding.remove(seq)
        if seq in self._prefilling:
            self._prefilling.remove(seq)
        self.runner.reset(seq.slot)
        self.slots.release(seq.slot)
        del self._by_slot[seq.slot]
        self._maybe_holes = True
        if job.done:
            with self._cond:
                self._running.remove(job)
            self._metrics.e2e_latency.observe(time.perf_counter() - job.handle.submitted_at)

    def _finish_unadmitted(self, job: Job) -> None:
        for index in range(job.params.n):
            self._post(job, FinishEvent(index, "cancelled"), final=True)

    def _drop_cancelled_running(self, cancel_all: bool) -> None:
        for job in list(self._running):
            if cancel_all or job.handle.cancelled:
                for seq in job.sequences:
                    self._finish(seq, "cancelled")

    def _rows_alone(
        self, exc: Exception, count: int, run_row: Callable[[int], np.ndarray]
    ) -> list[np.ndarray | str]:
        """After a batched run raised: each of its rows once on its own, so that one request's fault
        (a bad input, a transient error) ends only that request. Returns each row's result, or the
        error that ends it when it fails again.

        Re-running is safe because a failed run leaves every row's state as it was: lengths advance
        only after success, a failed K/V write lies past the length where the re-run writes again,
        and recurrent state is written back only after every run of the call succeeded.
        """
        log.warning(
            "model %s: a run of %d rows failed (%r); re-running each row alone", self.model_name, count, exc
        )
        results: list[np.ndarray | str] = []
        for i in range(count):
            try:
                results.append(run_row(i))
            except Exception as again:
                log.exception("model %s: a row failed again on its own; its request ends", self.model_name)
                results.append(f"model run failed: {again!r}")
        return results

    def _fail_all(self, message: str) -> None:
        for job in list(self._running):
            for seq in job.sequences:
                self._finish(seq, "error", error=message)

    # ---- delivery to event loops ----------------------------------------------------------------
    def _emit(self, seq: Sequence, event: TokenEvent | FinishEvent) -> None:
        self._post(seq.job, event)

    def _post(self, job: Job, item: Delivery, final: bool = False) -> None:
        if not job.handle.request.stream and not (final or job.done):
            job.held.append(item)  # a unary request gets everything at once, when it is done
            return
        outbox = self._outbox.setdefault(job.handle.loop, [])
        if job.held:
            outbox.extend((job.handle, held) for held in job.held)
            job.held.clear()
        outbox.append((job.handle, item))

    def _flush(self) -> None:
        """Hand pending events to their loops: one `call_soon_threadsafe` per loop, not one per token.

        Called just before each model run, so the woken event loop does its work while ORT computes
        with the GIL released instead of making this thread wait for the GIL.
        """
        if not self._outbox:
            return
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            try:
                loop.call_soon_threadsafe(RequestHandle.deliver_all, items)
            except RuntimeError:  # the caller's loop is closed: nobody is listening any more
                log.debug("dropping events for a closed event loop")

    def _update_gauges(self) -> None:
        running, waiting = len(self._running), len(self._waiting)  # len() is atomic: no lock per step
        used = self.slots.used
        if self._gauges == (running, waiting, used):
            return
        self._gauges = (running, waiting, used)
        self._metrics.running.set(running)
        self._metrics.waiting.set(waiting)
        self._metrics.slots_used.set(used)
        self._metrics.slots_usage.set(used / self.runner.max_slots)


def _settle(masks: MaskBatch | None) -> None:
    """Wait for a step's masks (also when the model failed: the matchers must be idle afterwards)."""
    if masks is not None:
        masks.wait()
