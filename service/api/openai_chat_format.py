"""OpenAI chat completions shapes: the unary response, the `chat.completion.chunk` SSE chunks, and
the chat form of logprobs (`{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}`).

A choice's index is its sample's; chat takes one conversation per request.
"""

from __future__ import annotations

from typing import Any

from service.api.generation import Generation, clean_logprob
from service.api.openai_format import stream_body, usage_dict
from service.api.openai_format import usage_chunk as completion_usage_chunk
from service.engine import CompletionOutput, GenerationResult

OBJECT = "chat.completion"
CHUNK_OBJECT = "chat.completion.chunk"
# Chat logprobs are numbers in OpenAI's schema; a token the filters removed (-inf) gets vLLM's stand-in.
REMOVED_LOGPROB = -9999.0


def chat_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def _logprob(value: float | None) -> float:
    cleaned = clean_logprob(value)
    return REMOVED_LOGPROB if cleaned is None else cleaned


def token_entries(
    gen: Generation,
    token_ids: list[int],
    logprobs: list[float | None],
    tops: list[list[tuple[int, float]] | None],
) -> list[dict[str, Any]]:
    """One `logprobs.content` entry per generated token, its alternatives most likely first."""
    entries = []
    for token_id, value, top in zip(token_ids, logprobs, tops, strict=True):
        text = gen.token_text(token_id)
        entries.append(
            {
                "token": text,
                "logprob": _logprob(value),
                "bytes": list(text.encode("utf-8")),
                "top_logprobs": [
                    {
                        "token": (alt := gen.token_text(t)),
                        "logprob": _logprob(lp),
                        "bytes": list(alt.encode("utf-8")),
                    }
                    for t, lp in (top or [])
                ],
            }
        )
    return entries


def response(gen: Generation, result: GenerationResult, logprobs: bool) -> dict[str, Any]:
    return {
        "id": chat_id(gen.record.request_id),
        "object": OBJECT,
        "created": gen.created,
        "model": gen.model,
        "choices": [_choice(gen, out, logprobs) for out in result.outputs],
        "usage": usage_dict(gen),
    }


def _choice(gen: Generation, out: CompletionOutput, logprobs: bool) -> dict[str, Any]:
    lp = None
    if logprobs:
        lp = {"content": token_entries(gen, out.token_ids, out.logprobs, out.top_logprobs)}
    return {
        "index": out.index,
        "message": {"role": "assistant", "content": out.text},
        "logprobs": lp,
        "finish_reason": out.finish_reason,
        "stop_reason": out.stop_reason,
    }


def chunk(
    gen: Generation,
    index: int,
    delta: dict[str, Any],
    logprobs: list[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
    stop_reason: str | int | None = None,
    with_usage_field: bool = False,
) -> dict[str, Any]:
    choice = {
        "index": index,
        "delta": delta,
        "logprobs": None if logprobs is None else {"content": logprobs},
        "finish_reason": finish_reason,
        "stop_reason": stop_reason,
    }
    return stream_body(gen, chat_id(gen.record.request_id), CHUNK_OBJECT, [choice], with_usage_field)


def usage_chunk(gen: Generation) -> dict[str, Any]:
    """The last chunk when stream_options.include_usage is set: no choices, the request's usage."""
    return completion_usage_chunk(gen, chat_id(gen.record.request_id), CHUNK_OBJECT)
