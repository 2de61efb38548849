"""`Generation`: the engine handles of one API request, merged into one event stream for the adapters.

An OpenAI request may carry several prompts (one engine request each); a scoring request
(max_tokens 0) runs one step for the prompt's logprobs and hides the token it had to generate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from tokenizers import Tokenizer

from service.api.errors import ApiError, ErrorKind
from service.api.token_labels import TokenLabels
from service.engine import (
    Event,
    FinishEvent,
    GenerationEngine,
    GenerationResult,
    RequestHandle,
    TokenEvent,
    Usage,
)


@dataclass
class RequestRecord:
    """What the one log line and the request metrics of an API call say."""

    route: str
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    model: str = "-"
    status: int = 200
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_at: float | None = None
    finish_reasons: list[str] = field(default_factory=list)
    texts: int = 0
    error: str | None = None
    closed: bool = False
    # A streaming response outlives its route handler and closes the record itself.
    detached: bool = False


# Finish reasons that say the request did not complete: scoring keeps them, and they fail the request.
_FAILED = ("cancelled", "error", "timeout")


def clean_logprob(value: float | None) -> float | None:
    """JSON has no -inf or NaN (a token the filters removed has logprob -inf): report those as null."""
    return value if value is not None and math.isfinite(value) else None


class Generation:
    """Submitted handles (prompt order) and the model that serves them; `cancel()` stops them all."""

    def __init__(
        self,
        model: str,
        engine: GenerationEngine,
        handles: list[RequestHandle],
        score_only: bool,
        record: RequestRecord,
        stream: bool = True,
    ) -> None:
        self.model = model
        self.engine = engine
        self.handles = handles
        self.score_only = score_only
        self.record = record
        self.stream = stream  # unary requests get their events at the end: no time to first token
        self.n = handles[0].request.params.n
        self.created = int(time.time())
        record.prompt_tokens = sum(len(h.prompt_token_ids) for h in handles)
        self._token_text: dict[int, str] = {}
        self._labels: TokenLabels | None = None

    @property
    def tokenizer(self) -> Tokenizer:
        return self.engine.tokenizer

    def token_text(self, token_id: int) -> str:
        """The text of one token (special tokens included), cached: logprobs name tokens by text."""
        text = self._token_text.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            self._token_text[token_id] = text
        return text

    @property
    def labels(self) -> TokenLabels:
        """OpenAI's names of tokens (a piece of a character by its bytes), made when first asked for."""
        if self._labels is None:
            self._labels = TokenLabels(self.tokenizer)
        return self._labels

    def cancel(self) -> None:
        for handle in self.handles:
            handle.cancel()

    @property
    def done(self) -> bool:
        return all(h.done.done() for h in self.handles)

    async def event_batches(self) -> AsyncIterator[list[tuple[int, Event]]]:
        """(prompt index, event) lists: everything that arrived by the time the consumer woke up
        (see RequestHandle.batches), so a stream that lags writes its backlog at once."""
        if len(self.handles) == 1:
            async for events in self.handles[0].batches():
                if seen := [(0, s) for e in events if (s := self._observe(e)) is not None]:
                    yield seen
            return
        queue: asyncio.Queue[tuple[int, list[Event]]] = asyncio.Queue()

        async def pump(index: int, handle: RequestHandle) -> None:
            async for events in handle.batches():
                queue.put_nowait((index, events))

        tasks = [asyncio.create_task(pump(i, h)) for i, h in enumerate(self.handles)]
        finishes_left = self.n * len(self.handles)
        try:
            while finishes_left:
                arrived = [await queue.get()]
                while not queue.empty():
                    arrived.append(queue.get_nowait())
                items = [(i, e) for i, events in arrived for e in events]
                finishes_left -= sum(isinstance(event, FinishEvent) for _, event in items)
                if seen := [(i, s) for i, e in items if (s := self._observe(e)) is not None]:
                    yield seen
        finally:
            for task in tasks:
                task.cancel()

    def _observe(self, event: Event) -> Event | None:
        """Record timings and counts; in scoring mode, hide (None) the one token it had to generate."""
        if isinstance(event, TokenEvent):
            if self.stream and self.record.first_token_at is None:
                self.record.first_token_at = time.perf_counter()
            return None if self.score_only else event
        if self.score_only:
            event = dataclasses.replace(
                event,
                text="",
                finish_reason=event.finish_reason if event.finish_reason in _FAILED else "length",
                stop_reason=None,
                usage=Usage(event.usage.prompt_tokens, 0),
            )
        self._finished(event.finish_reason, event.usage.completion_tokens, event.error)
        return event

    def _finished(self, reason: str, completion_tokens: int, error: str | None) -> None:
        self.record.completion_tokens += completion_tokens
        self.record.finish_reasons.append(reason)
        if error:
            self.record.error = error

    async def results(self) -> list[GenerationResult]:
        """Every prompt's unary result (texts, token ids, logprobs, usage), in prompt order."""
        results = list(await asyncio.gather(*(handle.result() for handle in self.handles)))
        for result in results:
            for out in result.outputs:
                if self.score_only:
                    out.text, out.token_ids, out.logprobs, out.top_logprobs = "", [], [], []
                    out.stop_reason = None
                    if out.finish_reason not in _FAILED:
                        out.finish_reason = "length"
                self._finished(out.finish_reason or "", len(out.token_ids), out.error)
            if self.score_only:
                result.usage = Usage(result.usage.prompt_tokens, 0)
        return results

    def failure(self) -> ApiError | None:
        """Why the request failed, once its events are in: a model failure (500), or it was stopped
        by the server, at the drain timeout or past its queue time limit (503: retry elsewhere)."""
        reasons = self.record.finish_reasons
        if "error" in reasons:
            return ApiError(ErrorKind.INTERNAL, f"the model failed: {self.record.error}")
        if "timeout" in reasons:
            return ApiError(ErrorKind.QUEUE_TIMEOUT, f"{self.record.error}; retry later", retry_after=True)
        if "cancelled" in reasons:  # client cancellations end a request before anyone asks
            return ApiError(
                ErrorKind.UNAVAILABLE,
                "the server is shutting down and cancelled the request at its drain timeout; retry",
                retry_after=True,
            )
        return None

    def usage(self) -> Usage:
        return Usage(self.record.prompt_tokens, self.record.completion_tokens)
