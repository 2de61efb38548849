"""Refuse a generation request at a full server before routing, validation and tokenising run.

At a full server refusals are most of the traffic, and each one went through FastAPI's routing,
pydantic, the engine's checks and the tokenizer before the queue said no: 1,000 simultaneous
completions got their 429s after p99 1.4 s. Here a request to a model with no free slot and no
queue place is answered from the raw body (only its `model` field is read). The route's own checks
stay as they are: this is only the early exit, and the engine checks again under its lock.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.core import InferenceCore
from service.api.errors import ApiError, ErrorKind
from service.api.middleware import send_error

# The routes that queue a generation: a refused request must look the same on each.
GENERATION_ROUTES = frozenset({"/v1/completions", "/v1/chat/completions", "/v1/generate"})


class AdmissionMiddleware:
    """Answers 429 + Retry-After for a generation request whose model is saturated."""

    def __init__(self, app: ASGIApp, core: InferenceCore, retry_after_s: int) -> None:
        self.app = app
        self.core = core
        self.retry_after = str(retry_after_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in GENERATION_ROUTES:
            await self.app(scope, receive, send)
            return
        first = await receive()  # the whole body: BodyLimitMiddleware (outside this one) replays it
        name = self.core.saturated_generation_model(_model_field(first.get("body", b"")))
        if name is None:
            await self.app(scope, _replay(first, receive), send)
            return
        record = self.core.begin(
            scope["path"], scope.get("state", {}).get("request_id")
        )  # RequestIdMiddleware
        record.model = name
        error = ApiError(
            ErrorKind.RESOURCE_EXHAUSTED,
            f"model {name!r}: no free slot and the waiting queue is full; retry later",
        )
        await send_error(send, error, {"retry-after": self.retry_after, "x-request-id": record.request_id})
        self.core.end(record, error.kind.http_status, error.message)


def _model_field(body: bytes) -> str | None:
    """The body's `model` if it is a JSON object with a string there; anything else is left to the
    route, which reports it properly."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else None


def _replay(first: Message, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return first
        return await receive()

    return replay
