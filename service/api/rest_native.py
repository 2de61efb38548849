"""POST /v1/generate: the native generation route, unary JSON or (with "stream": true) Server-Sent Events.

The body is the JSON form of the proto's GenerateRequest; the responses mirror GenerateResponse and
GenerateStreamResponse, built by native.py like the gRPC adapter's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.api import native
from service.api.core import InferenceCore
from service.api.errors import ErrorKind, fields_named_by
from service.api.generation import Generation
from service.api.rest_support import (
    EventStream,
    adopt_request_id,
    parse_body,
    request_id,
    sse,
    unless_disconnected,
)
from service.api.schemas import GenerateBody

ROUTE = "/v1/generate"
router = APIRouter()


@router.post(ROUTE)
async def generate(request: Request) -> Response:
    core: InferenceCore = request.app.state.core
    async with core.track(ROUTE, request_id(request)) as record:
        body = await parse_body(request, GenerateBody)
        adopt_request_id(request, record, body.request_id)
        with fields_named_by(body.param):
            gen = await core.submit(
                record,
                body.model,
                [body.the_prompt()],
                body.params,
                stream=body.stream,
                queue_timeout=body.timeout,
            )
        if body.stream:
            record.detached = True  # the stream closes the record when it ends
            return EventStream(_stream(core, gen), on_close=lambda: core.close_generation(gen))
        results = await unless_disconnected(request, gen.results(), gen.cancel)
        if failure := gen.failure():
            raise failure
        return JSONResponse(native.response(gen, results[0]))


async def _stream(core: InferenceCore, gen: Generation) -> AsyncIterator[bytes]:
    """One SSE message per token and per finished sample, then `data: [DONE]`. A stream the server
    stopped (drain timeout, queue time limit) ends with an error event before it; a failed stream is
    logged and counted with its error status, not 200."""
    first = True
    async for batch in gen.event_batches():
        # One write for whatever arrived together (a backlog when the loop is busy), not one per token.
        messages = native.stream_messages(gen, (event for _, event in batch), first)
        first = False
        yield b"".join(sse(message) for message in messages)
    failure = gen.failure()
    if failure is not None and failure.kind is not ErrorKind.INTERNAL:
        yield sse(failure.body())  # stopped by the server: the finish messages say "cancelled"
    yield sse("[DONE]")
    core.close_generation(gen)
