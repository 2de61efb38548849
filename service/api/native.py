"""The native response shapes (POST /v1/generate), which mirror the proto's messages field for field.

gRPC builds its messages from these same dicts, so the two APIs cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from service.api.generation import Generation, clean_logprob
from service.engine import CompletionOutput, Event, FinishEvent, GenerationResult, TokenEvent, Usage


def token_logprob(
    gen: Generation, token_id: int, logprob: float | None, top: list[tuple[int, float]] | None
) -> dict[str, Any]:
    return {
        "token_id": token_id,
        "token": gen.token_text(token_id),
        "logprob": clean_logprob(logprob),
        "top_logprobs": [
            {"token_id": t, "token": gen.token_text(t), "logprob": lp}
            for t, lp in (top or [])
            if clean_logprob(lp) is not None  # tokens the filters removed are no alternatives
        ],
    }


def prompt_logprobs(gen: Generation, result_ids: list[int], values: list[float | None] | None) -> list[dict]:
    """One entry per prompt token; the first has no logprob (nothing precedes it)."""
    if values is None:
        return []
    return [token_logprob(gen, t, lp, None) for t, lp in zip(result_ids, values, strict=False)]


def usage(u: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }


def completion(gen: Generation, out: CompletionOutput, want_logprobs: bool, error: str | None) -> dict:
    body: dict[str, Any] = {
        "index": out.index,
        "text": out.text,
        "token_ids": out.token_ids,
        "finish_reason": out.finish_reason,
        "stop_reason": out.stop_reason,
        "logprobs": None,
    }
    if want_logprobs:
        body["logprobs"] = [
            token_logprob(gen, t, lp, top)
            for t, lp, top in zip(out.token_ids, out.logprobs, out.top_logprobs, strict=True)
        ]
    if out.finish_reason == "error":
        body["error"] = error or "model failure"
    return body


def response(gen: Generation, result: GenerationResult) -> dict[str, Any]:
    """The unary response of one prompt."""
    params = gen.handles[0].request.params
    return {
        "id": gen.record.request_id,
        "model": gen.model,
        "created": gen.created,
        "completions": [
            completion(gen, out, params.logprobs is not None, gen.record.error) for out in result.outputs
        ],
        "prompt_token_ids": result.prompt_token_ids,
        "prompt_logprobs": (
            prompt_logprobs(gen, result.prompt_token_ids, result.prompt_logprobs)
            if params.prompt_logprobs
            else None
        ),
        "usage": usage(result.usage),
    }


def stream_messages(gen: Generation, events: Iterable[Event], first: bool) -> list[dict[str, Any]]:
    """The messages for events that arrived together: consecutive tokens of one sample share a
    message (text joined, ids and logprobs in order), so a stream that lags behind the model sends
    one message where it would send several. Each sample's finish stays a message of its own."""
    messages: list[dict[str, Any]] = []
    for event in events:
        last = messages[-1] if messages else None
        if (
            isinstance(event, TokenEvent)
            and last is not None
            and "finish_reason" not in last
            and last["index"] == event.index
        ):
            last["text"] += event.text
            last["token_ids"].append(event.token_id)
            if "logprobs" in last:
                last["logprobs"].append(token_logprob(gen, event.token_id, event.logprob, event.top_logprobs))
            continue
        messages.append(stream_message(gen, event, first))
        first = False
    return messages


def stream_message(gen: Generation, event: Event, first: bool) -> dict[str, Any]:
    """One streamed message: a token of sample `index`, or that sample's end with its usage."""
    params = gen.handles[0].request.params
    msg: dict[str, Any] = {"id": gen.record.request_id, "model": gen.model, "index": event.index}
    if isinstance(event, TokenEvent):
        msg["text"] = event.text
        msg["token_ids"] = [event.token_id]
        if params.logprobs is not None:
            msg["logprobs"] = [token_logprob(gen, event.token_id, event.logprob, event.top_logprobs)]
    else:
        assert isinstance(event, FinishEvent)
        msg["text"] = event.text
        msg["finish_reason"] = event.finish_reason
        msg["stop_reason"] = event.stop_reason
        msg["usage"] = usage(event.usage)
        if event.error:
            msg["error"] = event.error
    if first and params.prompt_logprobs:
        handle = gen.handles[0]
        msg["prompt_logprobs"] = prompt_logprobs(gen, handle.prompt_token_ids, handle.prompt_logprobs)
    return msg
