"""What the REST routes share: strict body parsing, unary waits that notice a disconnect, and SSE."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from service.api.errors import ApiError, ErrorKind, from_validation_error, invalid
from service.api.generation import RequestRecord

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


async def parse_body(request: Request, model: type[M]) -> M:
    return parse_json(await request.body(), model)


def parse_json(raw: bytes, model: type[M]) -> M:
    """JSON bytes -> model. Invalid UTF-8 bytes survive decoding as lone surrogates, so the schema's
    text check can name the field that held them instead of failing the whole body."""
    try:
        data = json.loads(raw.decode("utf-8", errors="surrogateescape")) if raw else None
    except json.JSONDecodeError as exc:
        raise invalid("body", f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(data, dict):
        raise invalid("body", "must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def request_id(request: Request) -> str:
    """The id RequestIdMiddleware gave this request (the client's X-Request-Id, or a new one)."""
    return str(request.state.request_id)


def adopt_request_id(request: Request, record: RequestRecord, from_body: str | None) -> None:
    """A body's `request_id` replaces the header's: in the log line, the response and its header."""
    if from_body:
        record.request_id = from_body
        request.state.request_id = from_body


async def _until_disconnected(request: Request) -> None:
    """After the body is read, the server's next message is the disconnect (or never comes)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[T], on_disconnect: Callable[[], None]) -> T:
    """Await `work`; if the client goes away first, call `on_disconnect` (cancel the generation)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        on_disconnect()
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if not task.done():
        on_disconnect()
        task.cancel()
        raise ApiError(ErrorKind.CANCELLED, "the client disconnected")
    return task.result()


def sse(data: dict[str, Any] | str) -> bytes:
    """One SSE event. orjson: the per-chunk JSON encoding was 5% of the event loop at 64 streams."""
    payload = data.encode() if isinstance(data, str) else orjson.dumps(data)
    return b"data: " + payload + b"\n\n"


class EventStream(StreamingResponse):
    """An SSE response whose `on_close` runs however the stream ends, even when a client leaves before
    the first chunk (the body generator would then never start, and its `finally` never run)."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=SSE_HEADERS)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` that documents a route's JSON body with its schema model (routes parse bodies
    themselves, see parse_body); the model is added to the schema's components by rest.py."""
    BODY_MODELS.add(model)
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


BODY_MODELS: set[type[BaseModel]] = set()


def add_body_schemas(schema: dict[str, Any]) -> dict[str, Any]:
    """Put every json_body model (and the models it refers to) under components.schemas."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in sorted(BODY_MODELS, key=lambda m: m.__name__):
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
    return schema
