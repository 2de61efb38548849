"""Dynamic batching for classifiers (as in Triton): a batch closes at `max_batch` inputs or when its
oldest input has waited `max_delay`; inputs of similar length are grouped so padding stays small.

A batcher that is idle (nothing queued, nothing running) dispatches what arrives at once: waiting
for company only pays when others are already arriving, and a lone caller should not pay `max_delay`.
A text longer than the model's input becomes several windows (service/engine/preprocessing.py); each
window is an input that rides in the same dynamic batches as other texts', and the text's answer is
its windows' outputs pooled as the manifest says."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from service import metrics
from service.engine.errors import (
    EngineStoppedError,
    InvalidRequestError,
    ManifestError,
    QueueFullError,
    RequestTooLargeError,
)
from service.engine.preprocessing import InputPolicy
from service.engine.runtime import ModelSession

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Classification:
    label: str
    probabilities: dict[str, float]


@dataclass(frozen=True)
class BatchRecord:
    """What one classifier run did; passed to `on_batch` observers (metrics, tests, logs)."""

    size: int
    padded_length: int
    oldest_wait_s: float
    started_at: float
    seconds: float


@dataclass
class _Item:
    ids: np.ndarray
    enqueued_at: float
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop


class ClassifierBatcher:
    """`await classify(texts)` from any event loop; one worker thread runs the ONNX classifier."""

    def __init__(
        self,
        name: str,
        session: ModelSession,
        tokenizer: Tokenizer,
        labels: Sequence[str],
        pad_id: int,
        eos_id: int | None,
        append_eos: bool,
        max_length: int,
        max_batch: int = 32,
        max_delay_ms: float = 5.0,
        max_queue: int = 1024,
        on_batch: Callable[[BatchRecord], None] | None = None,
        policy: InputPolicy | None = None,
        max_windows_per_text: int = 16,
        max_tokens_per_request: int = 65536,
    ) -> None:
        self.name = name
        self.session = session
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.pad_id = pad_id
        self.eos_id = eos_id if append_eos else None
        self.policy = policy or InputPolicy(max_tokens=max_length)
        self.max_length = self.policy.max_tokens
        if self.max_length - (1 if self.eos_id is not None else 0) < 1:
            # refused at load, so a bad manifest is one clear error rather than a 500 per request
            raise ManifestError(f"{name}: preprocessing max_tokens {self.max_length} leaves no room for text")
        self.max_windows_per_text = max_windows_per_text
        self.max_tokens_per_request = max_tokens_per_request
        self.max_batch = max_batch
        self.max_delay = max_delay_ms / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._pending: list[_Item] = []
        self._cond = threading.Condition()
        self._running = False
        self._busy = False  # the worker is running a batch
        self._dispatch_now = False  # work arrived at an idle batcher: no reason to wait for company
        self._thread: threading.Thread | None = None
        self._labels = {"model": name}
        metrics.MODEL_READY.labels(**self._labels).set(0)

    @property
    def provider(self) -> str:
        return self.session.provider

    @property
    def ready(self) -> bool:
        return self._running

    def start(self) -> None:
        """Warm up at a few batch shapes, then start the worker thread."""
        for batch, length in ((1, 8), (self.max_batch, 8), (self.max_batch, min(64, self.max_length))):
            self._run(
                np.full((batch, length), self.pad_id, dtype=np.int64), np.ones((batch, length), np.int64)
            )
        self._running = True
        self._thread = threading.Thread(target=self._worker, name=f"batcher-{self.name}", daemon=True)
        self._thread.start()
        metrics.MODEL_READY.labels(**self._labels).set(1)

    def encode(self, text: str, field: str = "texts[0]") -> list[np.ndarray]:
        """The model inputs of one text as the classifier was trained (the manifest's policy): one
        input, or its windows, each ending with `<|eos|>` when the model appends it.

        A text with no letter or digit (empty, whitespace, punctuation) carries no sentiment the
        models were trained on, so it is refused (HTTP 400 naming `field`) rather than labelled."""
        if not any(char.isalnum() for char in text):
            raise InvalidRequestError(field, "must contain at least one letter or digit")
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        inputs = self.policy.inputs(ids, self.eos_id)
        if len(inputs) > self.max_windows_per_text:
            raise RequestTooLargeError(
                field,
                f"{len(ids)} tokens make {len(inputs)} windows of {self.max_length}; "
                f"at most {self.max_windows_per_text} windows per text",
            )
        return [np.asarray(piece, dtype=np.int64) for piece in inputs]

    async def classify(self, texts: Sequence[str]) -> list[Classification]:
        """Classify texts (batched with other callers' texts); raises QueueFullError when saturated,
        InvalidRequestError naming `texts[i]` for a text refused, RequestTooLargeError past a limit."""
        loop = asyncio.get_running_loop()
        per_text = [self.encode(text, f"texts[{index}]") for index, text in enumerate(texts)]
        tokens = sum(len(piece) for pieces in per_text for piece in pieces)
        if tokens > self.max_tokens_per_request:
            raise RequestTooLargeError(
                "texts", f"{tokens} model tokens in all; at most {self.max_tokens_per_request} per request"
            )
        now = time.perf_counter()
        items = [[_Item(piece, now, loop.create_future(), loop) for piece in pieces] for pieces in per_text]
        flat = [item for group in items for item in group]
        if len(flat) > self.max_queue:  # could never fit, so not a retryable queue-full
            raise RequestTooLargeError(
                "texts", f"{len(flat)} model inputs in all; at most {self.max_queue} fit the queue"
            )
        with self._cond:
            if not self._running:
                raise EngineStoppedError(f"classifier {self.name!r} is not running")
            if len(self._pending) + len(flat) > self.max_queue:
                raise QueueFullError(f"classifier {self.name!r}: queue is full ({self.max_queue})")
            if not self._pending and not self._busy:
                self._dispatch_now = True
            self._pending.extend(flat)
            self._cond.notify()
        rows = await asyncio.gather(*(item.future for item in flat))
        results, at = [], 0
        for group in items:
            probs = self.policy.pool(np.stack(rows[at : at + len(group)]))
            at += len(group)
            results.append(
                Classification(
                    self.labels[int(np.argmax(probs))],
                    {label: float(p) for label, p in zip(self.labels, probs, strict=True)},
                )
            )
        return results

    async def stop(self, drain_timeout: float = 25.0) -> None:
        """Finish what is queued (the worker drains before exiting), then join the thread."""
        with self._cond:
            self._running = False
            self._cond.notify()
        metrics.MODEL_READY.labels(**self._labels).set(0)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, drain_timeout)

    def _take_batch_locked(self) -> list[_Item]:
        """The oldest item plus up to max_batch-1 others closest to it in length (no starvation)."""
        if len(self._pending) <= self.max_batch:
            batch, self._pending = self._pending, []
            return batch
        oldest = self._pending[0]
        rest = sorted(
            range(1, len(self._pending)), key=lambda i: (abs(len(self._pending[i].ids) - len(oldest.ids)), i)
        )
        chosen = {0, *rest[: self.max_batch - 1]}
        batch = [it for i, it in enumerate(self._pending) if i in chosen]
        self._pending = [it for i, it in enumerate(self._pending) if i not in chosen]
        return batch

    def _worker(self) -> None:
        while True:
            with self._cond:
                while not self._pending and self._running:
                    self._cond.wait()
                if not self._pending:
                    return
                deadline = self._pending[0].enqueued_at + self.max_delay
                # An idle batcher dispatches at once; company is awaited only under load.
                while not self._dispatch_now and self._running and len(self._pending) < self.max_batch:
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch = self._take_batch_locked()
                self._busy, self._dispatch_now = True, False
            self._process(batch)

    def _process(self, batch: list[_Item]) -> None:
        started = time.perf_counter()
        length = max(len(it.ids) for it in batch)
        ids = np.full((len(batch), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), length), dtype=np.int64)
        for row, it in enumerate(batch):
            ids[row, : len(it.ids)] = it.ids
            mask[row, : len(it.ids)] = 1
        try:
            probs = self._run(ids, mask)
        except Exception as exc:  # one failed batch fails its callers, not the worker
            log.exception("classifier %s failed a batch", self.name)
            self._set_idle()
            for it in batch:
                it.loop.call_soon_threadsafe(_set_exception, it.future, exc)
            return
        done = time.perf_counter()
        self._set_idle()  # before the hand-over: a caller's next request finds the batcher idle
        for row, it in enumerate(batch):
            # Observed before the hand-over: a caller who got its result finds it counted.
            metrics.CLASSIFIER_LATENCY.labels(**self._labels).observe(done - it.enqueued_at)
            it.loop.call_soon_threadsafe(_set_result, it.future, probs[row])
        metrics.CLASSIFIER_BATCH_SIZE.labels(**self._labels).observe(len(batch))
        if self.on_batch is not None:
            self.on_batch(
                BatchRecord(len(batch), length, started - batch[0].enqueued_at, started, done - started)
            )

    def _set_idle(self) -> None:
        with self._cond:
            self._busy = False

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Inputs go to the session's device once, probabilities come back to the host (IO binding:
        on the CPU the OrtValues wrap the arrays, on CUDA nothing else crosses)."""
        device = self.session.device
        binding = self.session.io_binding()
        binding.bind_ortvalue_input("input_ids", ort.OrtValue.ortvalue_from_numpy(ids, device, 0))
        binding.bind_ortvalue_input("attention_mask", ort.OrtValue.ortvalue_from_numpy(mask, device, 0))
        binding.bind_output("probabilities", "cpu")
        self.session.run_binding(binding)
        return binding.copy_outputs_to_cpu()[0]


def _set_result(future: asyncio.Future, value: object) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
