"""What callers submit and what they get back: requests, events, and the asyncio handle."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

from service.engine.errors import InvalidRequestError
from service.engine.params import SamplingParams

# "timeout": it left the queue unstarted, having waited longer than its queue time limit.
FinishReason = Literal["stop", "length", "cancelled", "error", "timeout"]


@dataclass(frozen=True)
class GenerationRequest:
    """A prompt (text, or token ids that bypass the tokenizer) and how to decode it."""

    prompt: str | None = None
    prompt_token_ids: tuple[int, ...] | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # False for unary responses: the events are handed over in one go when the request ends, so the
    # event loop is not woken once per token for a caller that only awaits `result()`.
    stream: bool = True
    # Seconds it may wait in the queue before it starts (the engine's own limit applies too): past
    # that it leaves the queue and finishes with "timeout".
    queue_timeout: float | None = None

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.prompt_token_ids is None):
            raise InvalidRequestError("prompt", "give exactly one of prompt and prompt_token_ids")
        if self.prompt_token_ids is not None:
            object.__setattr__(self, "prompt_token_ids", tuple(int(t) for t in self.prompt_token_ids))


@dataclass(slots=True)  # not frozen: one is built per token, and frozen init costs 2x; treat as read-only
class TokenEvent:
    """One generated token of sample `index`. `text` is the delta now safe to show (may be empty:
    held back inside a multi-byte character or a possible stop string; always empty for a
    `stream=False` request without stop strings, whose text comes whole in its FinishEvent)."""

    index: int
    token_id: int
    text: str
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class FinishEvent:
    """The end of sample `index`: the last text delta, why it ended, and its token counts."""

    index: int
    finish_reason: FinishReason
    text: str = ""
    stop_reason: str | int | None = None  # the stop string or stop token id that matched
    usage: Usage = field(default_factory=lambda: Usage(0, 0))
    error: str | None = None


Event = TokenEvent | FinishEvent


@dataclass(frozen=True)
class PromptLogprobs:
    """Internal: sets `RequestHandle.prompt_logprobs` on the loop before the first token arrives."""

    values: list[float | None]


Delivery = TokenEvent | FinishEvent | PromptLogprobs


@dataclass
class CompletionOutput:
    """One sample's accumulated result (unary responses)."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]] | None] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    error: str | None = None  # what failed, when finish_reason is "error"


@dataclass
class GenerationResult:
    request_id: str
    prompt_token_ids: list[int]
    prompt_logprobs: list[float | None] | None
    outputs: list[CompletionOutput]
    usage: Usage


class RequestHandle:
    """The caller's side of a submitted request: `async for event in handle`, `cancel()`, `await result()`.

    The one place that iterates a request's events. The scheduler thread hands them over with
    `loop.call_soon_threadsafe(RequestHandle.deliver_all, items)`, so the handle must be created (by
    `GenerationEngine.submit`) on the event loop that consumes it.
    """

    def __init__(
        self,
        request: GenerationRequest,
        prompt_token_ids: list[int],
        loop: asyncio.AbstractEventLoop,
        on_cancel: Callable[[], None],
    ) -> None:
        self.request = request
        self.request_id = request.request_id
        self.prompt_token_ids = prompt_token_ids
        self.prompt_logprobs: list[float | None] | None = None
        self.submitted_at = time.perf_counter()
        self.loop = loop  # events are delivered on it (a plain attribute: the scheduler reads it per token)
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._open = request.params.n
        self._cancelled = threading.Event()
        self._on_cancel = on_cancel
        self.done = loop.create_future()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Ask the scheduler to stop this request; its slots are freed at the next step. Idempotent."""
        if not self._cancelled.is_set():
            self._cancelled.set()
            self._on_cancel()

    @staticmethod
    def deliver_all(items: list[tuple[RequestHandle, Delivery]]) -> None:
        """Hand events to their handles; runs on their event loop (the scheduler batches per loop)."""
        for handle, item in items:
            handle.deliver(item)

    def deliver(self, event: Delivery) -> None:
        """Queue one event for the consumer; call it on the handle's event loop."""
        if isinstance(event, PromptLogprobs):
            self.prompt_logprobs = event.values
            return
        self._queue.put_nowait(event)
        if isinstance(event, FinishEvent):
            self._open -= 1
            if self._open == 0 and not self.done.done():
                self.done.set_result(None)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        # One event at a time off the queue, never more: an iterator that is left after a few events
        # (a caller reads the first token, then awaits result()) must leave the rest queued.
        remaining = self.request.params.n
        while remaining:
            event = await self._queue.get()
            if isinstance(event, FinishEvent):
                remaining -= 1
            yield event

    async def batches(self) -> AsyncIterator[list[Event]]:
        """Every event queued by the time the consumer wakes, as one list, until each sample finished.

        A consumer that falls behind the model (a busy event loop, a slow socket) then catches up
        with one write for several tokens instead of one write per token. Each list is taken off the
        queue whole, so use this only where every batch is consumed (a response stream).
        """
        remaining = self.request.params.n
        while remaining:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            remaining -= sum(isinstance(event, FinishEvent) for event in batch)
            yield batch

    async def result(self) -> GenerationResult:
        """Consume every event and assemble the unary response."""
        outputs = [CompletionOutput(index=i) for i in range(self.request.params.n)]
        completion_tokens = 0
        async for event in self:
            out = outputs[event.index]
            out.text += event.text
            if isinstance(event, TokenEvent):
                out.token_ids.append(event.token_id)
                out.logprobs.append(event.logprob)
                out.top_logprobs.append(event.top_logprobs)
            else:
                out.finish_reason = event.finish_reason
                out.stop_reason = event.stop_reason
                out.error = event.error
                completion_tokens += event.usage.completion_tokens
        return GenerationResult(
            request_id=self.request_id,
            prompt_token_ids=self.prompt_token_ids,
            prompt_logprobs=self.prompt_logprobs,
            outputs=outputs,
            usage=Usage(len(self.prompt_token_ids), completion_tokens),
        )
