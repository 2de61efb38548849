"""POST /tokenize and /detokenize with vLLM's request and response shapes: see the token ids a prompt
(or a chat, through the model's template) becomes, and turn ids back into text."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from service.api.core import InferenceCore
from service.api.errors import invalid
from service.api.rest_support import json_body, parse_body, request_id
from service.api.schemas import DetokenizeBody, TokenizeBody
from service.chat_template import ChatTemplateError

router = APIRouter()


@router.post("/tokenize", openapi_extra=json_body(TokenizeBody))
async def tokenize(request: Request) -> dict[str, object]:
    """{count, max_model_len, tokens[, token_strs]}: the ids generation would use for this input."""
    core: InferenceCore = request.app.state.core
    async with core.track("/tokenize", request_id(request)) as record:
        body = await parse_body(request, TokenizeBody)
        view = core.tokenizer(record, body.model)
        if body.messages is not None:
            if view.chat_template is None:
                raise invalid("messages", f"{view.model!r} has no chat template (manifest chat.template)")
            try:
                text = view.chat_template.render(body.messages_dicts(), body.add_generation_prompt)
            except ChatTemplateError as exc:
                raise invalid("messages", str(exc)) from None
            special = bool(body.add_special_tokens)
        else:
            text = body.prompt or ""
            special = body.add_special_tokens is not False
        # A long text takes a while to encode: not on the event loop, which streams other responses.
        encoding = await asyncio.to_thread(view.tokenizer.encode, text, add_special_tokens=special)
        return {
            "count": len(encoding.ids),
            "max_model_len": view.max_model_len,
            "tokens": encoding.ids,
            "token_strs": encoding.tokens if body.return_token_strs else None,
        }


@router.post("/detokenize", openapi_extra=json_body(DetokenizeBody))
async def detokenize(request: Request) -> dict[str, object]:
    """{prompt}: the text of these token ids (special tokens included, so a round trip is exact)."""
    core: InferenceCore = request.app.state.core
    async with core.track("/detokenize", request_id(request)) as record:
        body = await parse_body(request, DetokenizeBody)
        view = core.tokenizer(record, body.model)
        vocab = view.tokenizer.get_vocab_size()
        outside = next((i for i, t in enumerate(body.tokens) if t >= vocab), None)
        if outside is not None:
            token = body.tokens[outside]
            raise invalid(
                "tokens", f"item {outside}: {token} is outside the vocabulary [0, {vocab}) of {view.model!r}"
            )
        text = await asyncio.to_thread(view.tokenizer.decode, body.tokens, skip_special_tokens=False)
        return {"prompt": text}
