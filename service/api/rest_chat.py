"""POST /v1/chat/completions, compatible with OpenAI's chat completions API (and its Python client).

Messages become a prompt through the model's chat template (manifest `chat.template`, rendered
sandboxed by service/chat_template.py); from there a chat request is a completion with one prompt,
on the same core path. Streaming sends `chat.completion.chunk`s: a first one per choice with the
assistant role, content deltas, a last one per choice with its finish reason, then `data: [DONE]`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.api import openai_chat_format as fmt
from service.api.core import InferenceCore
from service.api.errors import ApiError, ErrorKind, fields_named_by, invalid
from service.api.generation import Generation
from service.api.rest_support import (
    EventStream,
    json_body,
    parse_body,
    request_id,
    sse,
    unless_disconnected,
)
from service.api.schemas import ChatCompletionBody
from service.chat_template import ChatTemplateError
from service.engine import FinishEvent

ROUTE = "/v1/chat/completions"
router = APIRouter()


@router.post(ROUTE, openapi_extra=json_body(ChatCompletionBody))
async def chat_completions(request: Request) -> Response:
    core: InferenceCore = request.app.state.core
    async with core.track(ROUTE, request_id(request)) as record:
        body = await parse_body(request, ChatCompletionBody)
        model, template = core.chat_template(record, body.model)
        try:
            prompt = template.render(body.messages_dicts(), body.add_generation_prompt)
        except ChatTemplateError as exc:
            raise invalid("messages", str(exc)) from None
        options = body.options(core.settings.max_new_tokens, template.stop)
        with fields_named_by(body.param):
            gen = await core.submit(
                record, model, [prompt], options, stream=bool(body.stream), queue_timeout=body.timeout
            )
        logprobs = bool(body.logprobs)
        if body.stream:
            record.detached = True  # the stream closes the record when it ends
            stream = _stream(core, gen, logprobs, body.include_usage)
            return EventStream(stream, on_close=lambda: core.close_generation(gen))
        results = await unless_disconnected(request, gen.results(), gen.cancel)
        if failure := gen.failure():
            raise failure
        return JSONResponse(fmt.response(gen, results[0], logprobs))


async def _stream(
    core: InferenceCore, gen: Generation, logprobs: bool, include_usage: bool
) -> AsyncIterator[bytes]:
    yield b"".join(
        sse(fmt.chunk(gen, i, {"role": "assistant", "content": ""}, with_usage_field=include_usage))
        for i in range(gen.n)
    )
    stopped = False
    async for batch in gen.event_batches():
        # One write for whatever arrived together (a backlog when the loop is busy), not one per token.
        messages: list[bytes] = []
        for _, event in batch:
            if isinstance(event, FinishEvent):
                if event.finish_reason == "error":
                    failure = ApiError(ErrorKind.INTERNAL, f"the model failed: {event.error}")
                    messages.append(sse(failure.body()))
                elif event.finish_reason in ("cancelled", "timeout"):  # stopped by the server: one event
                    if not stopped and (failure := gen.failure()) is not None:
                        stopped = True
                        messages.append(sse(failure.body()))
                else:
                    delta = {"content": event.text} if event.text else {}
                    chunk = fmt.chunk(
                        gen, event.index, delta, None, event.finish_reason, event.stop_reason, include_usage
                    )
                    messages.append(sse(chunk))
                continue
            lp = None
            if logprobs:
                lp = fmt.token_entries(gen, [event.token_id], [event.logprob], [event.top_logprobs])
            if event.text or lp is not None:
                chunk = fmt.chunk(gen, event.index, {"content": event.text}, lp, None, None, include_usage)
                messages.append(sse(chunk))
        if messages:
            yield b"".join(messages)
    if include_usage:
        yield sse(fmt.usage_chunk(gen))
    yield sse("[DONE]")
    core.close_generation(gen)
