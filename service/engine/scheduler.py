"""Continuous batching: one thread admits, prefills, decodes one step for every slot, samples and emits.

This file is the orchestration only. What to admit and how many prompt tokens each request
prefills in a step is decided by admission_policy.py (pure functions); the decoding rows and their
sampling parameters live in decode_batch.py; detokenizing, stop strings, finishing and delivery are
output_processor.py's.

ORT releases the GIL while it runs, so the thread computes while the event loop serves sockets.
New requests join the running batch at the next iteration; finished and cancelled ones free their
slots at once. When there is nothing to do the thread waits on a condition (no polling). Prompts
are prefilled in chunks that share a per-step token budget, while the decoding rows keep stepping
every iteration, so neither a long prompt nor a crowd of new ones stalls the running streams or
holds up a short prompt's first token.

A model run that raises does not end the batch: each of its rows is re-run once on its own, and only
the rows that fail again end, with finish reason "error" (`_rows_alone`). vLLM stops the whole
instance on any fault and TGI drops the whole batch; one bad request should cost only itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np
from tokenizers import Tokenizer

from service import metrics
from service.engine.admission_policy import WaitingRequest, admit, prefill_chunks
from service.engine.decode_batch import DecodeBatch
from service.engine.errors import EngineStoppedError, QueueFullError
from service.engine.kv_cache import SlotAllocator
from service.engine.masks import MaskBatch, MaskWorker
from service.engine.output_processor import Ending, OutputProcessor
from service.engine.request import PromptLogprobs
from service.engine.runner import ModelRunner
from service.engine.sampling import SampleOutput, prompt_logprobs, sample
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
        min_prefill_chunk: int | None = None,
    ) -> None:
        self.runner = runner
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.max_queue = max_queue
        self.prefill_chunk_tokens = prefill_chunk_tokens  # prompt tokens per step, shared
        # The smallest share of it a prefilling request gets: at most 8 prompts take part in a step,
        # which bounds its model runs (a Transformer row with cached tokens runs on its own).
        self.min_prefill_chunk = min_prefill_chunk or max(1, prefill_chunk_tokens // 8)
        self.slots = SlotAllocator(runner.max_slots)
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._running: list[Job] = []
        self._prefilling: list[Sequence] = []  # oldest first
        self._batch = DecodeBatch(runner.max_slots)
        self._accepting = True
        self._cancel_all = False
        self._attention = False  # set (under the lock) by submit, cancel and close
        self._maybe_holes = False  # a slot was freed since the last compaction
        self._thread: threading.Thread | None = None
        self._decode_cache: dict[bool, dict[int, str]] = {True: {}, False: {}}
        self._by_slot: dict[int, Sequence] = {}
        self._metrics = metrics.ModelMetrics(model_name)
        self._metrics.slots_total.set(runner.max_slots)
        self.output = OutputProcessor(self._metrics, runner.max_len, runner.length)
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
        self.runner.session.before_run = self.output.flush
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
            # Fast path: only decoding rows and nothing new (no submit, cancel or close since the
            # last look) means one more decode step, without the lock and the queue bookkeeping.
            steady = not self._attention and self._batch and not self._prefilling
            admitted: list[Job] = []
            if not steady:
                with self._cond:
                    while not (self._waiting or self._running or not self._accepting):
                        self._cond.wait()
                    if not self._accepting and not self._waiting and not self._running:
                        break
                    self._attention = False
                    cancel_all = self._cancel_all
                    admitted, dropped = self._admit_locked(cancel_all)
                for job in dropped:
                    self.output.finish_unadmitted(job)
            for job in admitted:
                self._start_or_abandon(job)
            try:
                if not steady:
                    self._drop_cancelled_running(cancel_all)
                self._prefill_step()
                self._compact()
                self._decode_step()
            except Exception as exc:  # a fault outside the model runs (those are isolated per row)
                log.exception("model %s failed a step", self.model_name)
                self._fail_all(repr(exc))
            self._update_gauges()  # before the events go out, so a caller who got its result sees them
            if not (self._batch or self._prefilling):
                self.output.flush()  # otherwise the next model run flushes (runtime.ModelSession.before_run)
        self._update_gauges()
        self.output.flush()
        self._masks.close()

    def _admit_locked(self, cancel_all: bool) -> tuple[list[Job], list[Job]]:
        """Apply the admission policy to the queue: (jobs that start, with their slots; jobs dropped)."""
        waiting = [WaitingRequest(job.params.n, job.handle.cancelled) for job in self._waiting]
        plan = admit(waiting, self.slots.free, cancel_all)
        if not (plan.admit or plan.drop):
            return [], []
        queue = list(self._waiting)
        admitted = [queue[i] for i in plan.admit]
        dropped = [queue[i] for i in plan.drop]
        leaving = set(plan.admit) | set(plan.drop)
        self._waiting = deque(job for i, job in enumerate(queue) if i not in leaving)
        for job in admitted:
            job.slots = [self.slots.allocate() for _ in range(job.params.n)]
        self._running.extend(admitted)
        return admitted, dropped

    def _start_or_abandon(self, job: Job) -> None:
        """Start an admitted job; if that raises (a reset, a grammar matcher), only this job ends: its
        slots go back and each of its samples finishes with the error, so its caller never hangs."""
        try:
            self._start_job(job)
        except Exception as exc:
            log.exception("model %s could not start a request; it ends with an error", self.model_name)
            for seq in job.sequences:
                self._by_slot.pop(seq.slot, None)
                if seq in self._prefilling:
                    self._prefilling.remove(seq)
            job.sequences.clear()
            for slot in job.slots:
                self.slots.release(slot)
            with self._cond:
                self._running.remove(job)
            self._attention = True  # the freed slots can take a waiting request
            self._maybe_holes = True
            self.output.finish_unadmitted(job, "error", f"request could not start: {exc!r}")

    def _start_job(self, job: Job) -> None:
        """Its samples take their slots; the first joins the prefill (queue time runs until its first
        chunk runs, see `_prefill_step`)."""
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
        """Run this step's prompt chunks: the admission policy shares `prefill_chunk_tokens` among the
        requests being prefilled (see admission_policy.prefill_chunks)."""
        if not self._prefilling:
            return
        remaining = [len(seq.job.prompt) - seq.prefilled for seq in self._prefilling]
        sizes = prefill_chunks(remaining, self.prefill_chunk_tokens, self.min_prefill_chunk)
        rows, chunks, want_all, seqs = [], [], [], []
        now = time.perf_counter()
        for seq, take in zip(self._prefilling, sizes, strict=True):
            if take == 0:
                continue
            start = seq.prefilled
            job = seq.job
            if start == 0:  # its first chunk: the request stops waiting now
                job.admitted_at = now
                self._metrics.queue_time.observe(now - job.handle.submitted_at)
            rows.append(seq.slot)
            chunks.append(job.prompt[start : start + take])
            want_all.append(job.params.prompt_logprobs and seq.index == 0)
            seqs.append(seq)
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
                for sibling in seq.job.sequences:
                    self._finish(Ending(sibling, "error", error=error))
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
                    self.output.post(job, PromptLogprobs(job.prompt_logprobs or [None]))
        if not ready:
            return
        assert [id(s) for s, _ in ready] == [id(s) for s in finishing]
        started = [s for s, _ in ready]
        logits = np.stack([lg for _, lg in ready])
        allowed, dead_ends = _allowed(masks)
        out = sample(logits, [s.row for s in started], allowed)
        self._emit(started, out, dead_ends)
        for seq in started:
            if not seq.finished:
                self._batch.add(seq, seq.next_token)

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
            self._batch.move(seq, dst)
            self._by_slot[dst] = seq

    def _decode_step(self) -> None:
        batch = self._batch
        if not batch:
            return
        size = len(batch)
        rows, tokens = batch.slots[:size], batch.tokens[:size]  # views: the batch keeps them
        # Each constrained row's matcher has taken its last token already: its next mask is computed
        # on the mask thread while the model runs (both release the GIL).
        masks = batch.start_masks(self._masks)
        try:
            logits = self.runner.decode(rows, tokens)
        except Exception as exc:
            logits, masks = self._decode_rows_alone(exc, masks)
            if logits is None:
                return
        finally:
            _settle(masks)
        self._metrics.batch_size.observe(len(batch))
        allowed, dead_ends = _allowed(masks)
        self._emit(batch.seqs, batch.sample(logits, allowed), dead_ends)

    def _decode_rows_alone(
        self, exc: Exception, masks: MaskBatch | None
    ) -> tuple[np.ndarray | None, MaskBatch | None]:
        """After a failed decode run: each row alone; the rows that fail again end. Returns the
        survivors' logits in batch order (None when none is left) and their masks."""
        batch = self._batch
        seqs = list(batch.seqs)
        rows, tokens = batch.slots[: len(seqs)].copy(), batch.tokens[: len(seqs)].copy()
        each = self._rows_alone(
            exc, len(seqs), lambda i: self.runner.decode(rows[i : i + 1], tokens[i : i + 1])[0].copy()
        )
        failed = [i for i, out in enumerate(each) if isinstance(out, str)]
        _settle(masks)
        for i in failed:
            self._finish(Ending(seqs[i], "error", error=each[i]))
        if masks is not None and failed:
            masks = masks.without(failed)
        survivors = [out for out in each if not isinstance(out, str)]
        return (np.stack(survivors) if survivors else None), masks

    def _emit(self, seqs: list[Sequence], out: SampleOutput, dead_ends: frozenset[int]) -> None:
        """Hand the sampled tokens to the output processor and end the samples it says end."""
        endings = self.output.accept(seqs, out, dead_ends)
        for ending in endings:
            self._finish(ending)

    def _finish(self, ending: Ending) -> None:
        seq = ending.seq
        if seq.finished:
            return
        seq.finished = True
        self.output.finish(ending)
        self._batch.remove(seq)
        if seq in self._prefilling:
            self._prefilling.remove(seq)
        self.runner.reset(seq.slot)
        self.slots.release(seq.slot)
        del self._by_slot[seq.slot]
        if self._waiting:  # a freed slot can take a waiting request now, not when the batch drains
            self._attention = True
        self._maybe_holes = True
        job = seq.job
        if job.done:
            with self._cond:
                self._running.remove(job)

    def _drop_cancelled_running(self, cancel_all: bool) -> None:
        for job in list(self._running):
            if cancel_all or job.handle.cancelled:
                for seq in job.sequences:
                    self._finish(Ending(seq, "cancelled"))

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
                self._finish(Ending(seq, "error", error=message))

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


def _allowed(masks: MaskBatch | None) -> tuple[tuple[np.ndarray, np.ndarray] | None, frozenset[int]]:
    """The step's structured-output masks as (rows, allowed) for the sampler, and the rows whose
    constraint no token can continue (they end; their mask is lifted so the sampler has a choice)."""
    if masks is None:
        return None, frozenset()
    rows, ok = masks.rows, masks.allowed()
    stuck = ~ok.any(axis=1)
    dead_ends: frozenset[int] = frozenset()
    if stuck.any():
        ok[stuck] = True
        dead_ends = frozenset(rows[stuck].tolist())
    return (rows, ok), dead_ends


def _settle(masks: MaskBatch | None) -> None:
    """Wait for a step's masks (also when the model failed: the matchers must be idle afterwards)."""
    if masks is not None:
        masks.wait()
