"""OpenAI completions shapes: the unary response, the SSE chunks, and the legacy `logprobs` object.

A choice's index is prompt_index * n + sample. `text_offset` counts characters from the start of the
choice's text (which begins with the prompt when `echo` is set). Tokens are named as token_labels.py
says (a byte-level piece of a character as "bytes:\\xNN").
"""

from __future__ import annotations

from typing import Any

from service.api.generation import Generation, clean_logprob
from service.engine import CompletionOutput, GenerationResult, TokenEvent
from service.engine.detokenizer import IncrementalDetokenizer

OBJECT = "text_completion"


def completion_id(request_id: str) -> str:
    return f"cmpl-{request_id}"


class LogprobsBuilder:
    """Accumulates the legacy logprobs object of one choice, token by token.

    `text_offset` is the character offset of each token in the choice's text: the text decoded so far
    is replayed token by token, as the engine's detokeniser made it, so a token that holds only part
    of a character sits at that character, and special tokens the text leaves out take no room. No
    offset lies past the text the client has been given (`shown`), e.g. inside a cut stop string.
    """

    def __init__(self, gen: Generation) -> None:
        self.gen = gen
        self.base = 0  # characters before the tokens now being added (the echoed prompt)
        self.decoded = 0  # characters the detokeniser made final from those tokens
        self.shown = 0  # characters of the choice's text the client has, or will have in this chunk
        self._detokenizer = IncrementalDetokenizer(gen.tokenizer)
        self.tokens: list[str] = []
        self.token_logprobs: list[float | None] = []
        self.top_logprobs: list[dict[str, float] | None] = []
        self.text_offset: list[int] = []

    def add(self, token_id: int, logprob: float | None, top: list[tuple[int, float]] | None) -> None:
        label = self.gen.labels.label
        text = label(token_id)
        logprob = clean_logprob(logprob)
        self.tokens.append(text)
        self.token_logprobs.append(logprob)
        if logprob is None:
            self.top_logprobs.append(None)
        else:
            entries = {label(t): lp for t, lp in (top or []) if clean_logprob(lp) is not None}
            entries.setdefault(text, logprob)
            self.top_logprobs.append(entries)
        self.text_offset.append(self.base + self.decoded)
        self.decoded += len(self._detokenizer.add(token_id))

    def add_prompt(self, token_ids: list[int], logprobs: list[float | None] | None, text: str) -> None:
        """Prompt tokens (echo): their own logprob only; the first token has none. The generated
        tokens that follow are decoded afresh, as the engine does, after the prompt's `text`."""
        values = logprobs or [None] * len(token_ids)
        for token_id, lp in zip(token_ids, values, strict=False):
            self.add(token_id, lp, None)
        self.base, self.decoded = self.base + len(text), 0
        self._detokenizer = IncrementalDetokenizer(self.gen.tokenizer)
        self.shown += len(text)

    def take(self) -> dict[str, Any]:
        """The object so far, and start afresh (streaming sends each chunk's tokens once)."""
        body = {
            "tokens": self.tokens,
            "token_logprobs": self.token_logprobs,
            "top_logprobs": self.top_logprobs,
            "text_offset": [min(offset, self.shown) for offset in self.text_offset],
        }
        self.tokens, self.token_logprobs, self.top_logprobs, self.text_offset = [], [], [], []
        return body


def prompt_text(gen: Generation, prompt: str | list[int]) -> str:
    return prompt if isinstance(prompt, str) else gen.tokenizer.decode(list(prompt))


def response(
    gen: Generation,
    results: list[GenerationResult],
    prompts: list[str | list[int]],
    echo: bool,
    logprobs: int | None,
) -> dict[str, Any]:
    choices = []
    for p_index, (result, prompt) in enumerate(zip(results, prompts, strict=True)):
        for out in result.outputs:
            choices.append(_choice(gen, p_index, result, out, prompt, echo, logprobs))
    return {
        "id": completion_id(gen.record.request_id),
        "object": OBJECT,
        "created": gen.created,
        "model": gen.model,
        "choices": choices,
        "usage": usage_dict(gen),
    }


def _choice(
    gen: Generation,
    p_index: int,
    result: GenerationResult,
    out: CompletionOutput,
    prompt: str | list[int],
    echo: bool,
    logprobs: int | None,
) -> dict[str, Any]:
    echoed = prompt_text(gen, prompt) if echo else ""
    text = echoed + out.text
    lp: dict[str, Any] | None = None
    if logprobs is not None:
        builder = LogprobsBuilder(gen)
        if echo:
            builder.add_prompt(result.prompt_token_ids, result.prompt_logprobs, echoed)
        for token_id, value, top in zip(out.token_ids, out.logprobs, out.top_logprobs, strict=True):
            builder.add(token_id, value, top)
        builder.shown = len(text)
        lp = builder.take()
    return {
        "index": p_index * gen.n + out.index,
        "text": text,
        "logprobs": lp,
        "finish_reason": out.finish_reason,
        "stop_reason": out.stop_reason,
    }


def usage_dict(gen: Generation) -> dict[str, int]:
    u = gen.usage()
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }


def chunk(
    gen: Generation,
    index: int,
    text: str,
    logprobs: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    stop_reason: str | int | None = None,
    with_usage_field: bool = False,
) -> dict[str, Any]:
    choice = {
        "index": index,
        "text": text,
        "logprobs": logprobs,
        "finish_reason": finish_reason,
        "stop_reason": stop_reason,
    }
    return stream_body(gen, completion_id(gen.record.request_id), OBJECT, [choice], with_usage_field)


def stream_body(
    gen: Generation, chunk_id: str, object_name: str, choices: list[dict[str, Any]], with_usage_field: bool
) -> dict[str, Any]:
    """The envelope every streamed chunk shares (completions and chat): with `stream_options.
    include_usage` each chunk carries `usage: null`, and only the last one the counts."""
    body: dict[str, Any] = {
        "id": chunk_id,
        "object": object_name,
        "created": gen.created,
        "model": gen.model,
        "choices": choices,
    }
    if with_usage_field:
        body["usage"] = None
    return body


def usage_chunk(gen: Generation, chunk_id: str | None = None, object_name: str = OBJECT) -> dict[str, Any]:
    """The last chunk when stream_options.include_usage is set: no choices, the request's usage
    (completions by default; chat passes its own id and object name)."""
    body = stream_body(gen, chunk_id or completion_id(gen.record.request_id), object_name, [], True)
    body["usage"] = usage_dict(gen)
    return body


def token_chunk_logprobs(builder: LogprobsBuilder, event: TokenEvent) -> dict[str, Any]:
    builder.add(event.token_id, event.logprob, event.top_logprobs)
    builder.shown += len(event.text)
    return builder.take()
