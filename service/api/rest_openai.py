"""POST /v1/completions, compatible with OpenAI's completions API (and its Python client, unmodified).

Streaming sends `text_completion` chunks and ends with `data: [DONE]`; `echo` with `logprobs` and
`max_tokens: 0` returns the prompt's token logprobs without generating (how clients score text).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.api import openai_format as fmt
from service.api.core import InferenceCore
from service.api.errors import ApiError, ErrorKind, fields_named_by
from service.api.generation import Generation
from service.api.rest_support import (
    EventStream,
    json_body,
    parse_body,
    request_id,
    sse,
    unless_disconnected,
)
from service.api.schemas import CompletionBody
from service.engine import Event, FinishEvent

ROUTE = "/v1/completions"
router = APIRouter()


@router.post(ROUTE, openapi_extra=json_body(CompletionBody))
async def completions(request: Request) -> Response:
    core: InferenceCore = request.app.state.core
    async with core.track(ROUTE, request_id(request)) as record:
        body = await parse_body(request, CompletionBody)
        prompts = body.prompts()
        echo = bool(body.echo)
        with fields_named_by(body.param):
            gen = await core.submit(
                record,
                body.model,
                prompts,
                body.options(),
                stream=bool(body.stream),
                returns_prompt=echo,
                queue_timeout=body.timeout,
            )
        if body.stream:
            record.detached = True  # the stream closes the record when it ends
            stream = _stream(core, gen, prompts, echo, body.logprobs, body.include_usage)
            return EventStream(stream, on_close=lambda: core.close_generation(gen))
        results = await unless_disconnected(request, gen.results(), gen.cancel)
        if failure := gen.failure():
            raise failure
        return JSONResponse(fmt.response(gen, results, prompts, echo, body.logprobs))


async def _stream(
    core: InferenceCore,
    gen: Generation,
    prompts: list[str | list[int]],
    echo: bool,
    logprobs: int | None,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    messages = _StreamMessages(gen, prompts, echo, logprobs, include_usage)
    async for batch in gen.event_batches():
        # One write for whatever arrived together (a backlog when the loop is busy), not one per token.
        chunk = b"".join(message for p_index, event in batch for message in messages.of(p_index, event))
        if chunk:
            yield chunk
    if include_usage:
        yield sse(fmt.usage_chunk(gen))
    yield sse("[DONE]")
    core.close_generation(gen)


class _StreamMessages:
    """The SSE messages (zero or more) that one engine event becomes in an OpenAI completions stream."""

    def __init__(
        self,
        gen: Generation,
        prompts: list[str | list[int]],
        echo: bool,
        logprobs: int | None,
        include_usage: bool,
    ) -> None:
        self.gen, self.prompts, self.echo, self.include_usage = gen, prompts, echo, include_usage
        self.builders: dict[int, fmt.LogprobsBuilder] = {}
        if logprobs is not None:
            self.builders = {i: fmt.LogprobsBuilder(gen) for i in range(len(prompts) * gen.n)}
        self.echoed: set[int] = set()
        self.stopped = False

    def of(self, p_index: int, event: Event) -> Iterator[bytes]:
        gen, usage = self.gen, self.include_usage
        index = p_index * gen.n + event.index
        builder = self.builders.get(index)
        if self.echo and index not in self.echoed:
            # The prompt goes first, once per choice; its logprobs are known once the prompt is prefilled.
            self.echoed.add(index)
            lp = None
            text = fmt.prompt_text(gen, self.prompts[p_index])
            if builder is not None:
                handle = gen.handles[p_index]
                builder.add_prompt(handle.prompt_token_ids, handle.prompt_logprobs, text)
                lp = builder.take()
            yield sse(fmt.chunk(gen, index, text, lp, None, None, usage))
        if isinstance(event, FinishEvent):
            if event.finish_reason == "error":
                yield sse(ApiError(ErrorKind.INTERNAL, f"the model failed: {event.error}").body())
                return
            if event.finish_reason in ("cancelled", "timeout"):  # stopped by the server: one error event
                if not self.stopped:
                    self.stopped = True
                    failure = self.gen.failure()
                    assert failure is not None
                    yield sse(failure.body())
                return
            yield sse(fmt.chunk(gen, index, event.text, None, event.finish_reason, event.stop_reason, usage))
            return
        lp = fmt.token_chunk_logprobs(builder, event) if builder is not None else None
        if event.text or lp is not None:
            yield sse(fmt.chunk(gen, index, event.text, lp, None, None, usage))
