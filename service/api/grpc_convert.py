"""Proto messages <-> the core's types. Requests become `SamplingOptions` (so the schema's defaults,
ranges and messages apply as over REST); responses are built from native.py's dicts."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from service.api.core import ModelView
from service.api.errors import from_validation_error
from service.api.generated.seqserve.v1 import inference_pb2 as pb
from service.api.schemas import SamplingOptions, single_prompt
from service.engine import Classification

_OPTIONAL = (
    "max_tokens",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "seed",
    "logprobs",
    "min_tokens",
)
FINISH = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "cancelled": pb.FINISH_REASON_CANCELLED,
    "error": pb.FINISH_REASON_ERROR,
}


def options(params: pb.SamplingParams) -> SamplingOptions:
    """Unset optional fields keep the shared defaults; errors name the field as "params.<name>"."""
    values: dict[str, Any] = {name: getattr(params, name) for name in _OPTIONAL if params.HasField(name)}
    values["stop"] = list(params.stop)
    values["stop_token_ids"] = list(params.stop_token_ids)
    values["ignore_eos"] = params.ignore_eos
    values["prompt_logprobs"] = params.prompt_logprobs
    values["logit_bias"] = {str(token): bias for token, bias in params.logit_bias.items()}
    if params.HasField("structured_outputs"):
        values["structured_outputs"] = structured_outputs(params.structured_outputs)
    if params.HasField("response_format"):
        values["response_format"] = response_format(params.response_format)
    try:
        return SamplingOptions.model_validate(values)
    except ValidationError as exc:
        raise from_validation_error(exc, "params.") from None


def structured_outputs(msg: pb.StructuredOutputs) -> dict[str, Any]:
    """The oneof as the REST body's object (an unset oneof stays empty: the schema then names the field)."""
    kind = msg.WhichOneof("kind")
    if kind is None:
        return {}
    if kind == "choice":
        return {"choice": list(msg.choice.choices)}
    return {kind: getattr(msg, kind)}


def response_format(msg: pb.ResponseFormat) -> dict[str, Any]:
    out: dict[str, Any] = {"type": msg.type}
    if msg.HasField("json_schema"):
        js = msg.json_schema
        out["json_schema"] = {"name": js.name or "response", "schema": js.schema, "strict": js.strict}
        if js.description:
            out["json_schema"]["description"] = js.description
    return out


def prompt(request: pb.GenerateRequest) -> str | list[int]:
    """Exactly one of prompt and prompt_token_ids (proto3 cannot tell an empty one from an unset one)."""
    return single_prompt(request.prompt or None, list(request.prompt_token_ids) or None)


def token_logprob(d: dict[str, Any]) -> pb.TokenLogprob:
    msg = pb.TokenLogprob(
        token_id=d["token_id"],
        token=d["token"],
        top_logprobs=[pb.TopLogprob(**t) for t in d["top_logprobs"]],
    )
    if d["logprob"] is not None:
        msg.logprob = d["logprob"]
    return msg


def usage(d: dict[str, int]) -> pb.Usage:
    return pb.Usage(**d)


def _stop_reason(msg: pb.Completion | pb.GenerateStreamResponse, reason: str | int | None) -> None:
    if isinstance(reason, str):
        msg.stop_string = reason
    elif isinstance(reason, int):
        msg.stop_token_id = reason


def generate_response(d: dict[str, Any]) -> pb.GenerateResponse:
    completions = []
    for c in d["completions"]:
        msg = pb.Completion(
            index=c["index"],
            text=c["text"],
            token_ids=c["token_ids"],
            finish_reason=FINISH.get(c["finish_reason"] or "", pb.FINISH_REASON_UNSPECIFIED),
            logprobs=[token_logprob(t) for t in c["logprobs"] or []],
            error=c.get("error") or "",
        )
        _stop_reason(msg, c["stop_reason"])
        completions.append(msg)
    return pb.GenerateResponse(
        id=d["id"],
        model=d["model"],
        completions=completions,
        prompt_token_ids=d["prompt_token_ids"],
        prompt_logprobs=[token_logprob(t) for t in d["prompt_logprobs"] or []],
        usage=usage(d["usage"]),
    )


def stream_response(d: dict[str, Any]) -> pb.GenerateStreamResponse:
    """Only the fields the message carries are set: a token message (most of a stream) costs one
    constructor call, not a pass over every field of the proto."""
    msg = pb.GenerateStreamResponse(
        id=d["id"], model=d["model"], index=d["index"], text=d["text"], token_ids=d.get("token_ids", ())
    )
    if logprobs := d.get("logprobs"):
        msg.logprobs.extend(token_logprob(t) for t in logprobs)
    if prompt_logprobs := d.get("prompt_logprobs"):
        msg.prompt_logprobs.extend(token_logprob(t) for t in prompt_logprobs)
    if "finish_reason" in d:
        msg.finish_reason = FINISH.get(d["finish_reason"] or "", pb.FINISH_REASON_UNSPECIFIED)
        _stop_reason(msg, d.get("stop_reason"))
        if "usage" in d:
            msg.usage.CopyFrom(usage(d["usage"]))
        if error := d.get("error"):
            msg.error = error
    return msg


def classify_response(request_id: str, model: str, results: list[Classification]) -> pb.ClassifyResponse:
    return pb.ClassifyResponse(
        id=request_id,
        model=model,
        results=[pb.Classification(label=r.label, probabilities=r.probabilities) for r in results],
    )


def model_info(m: ModelView) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=m.name,
        task=m.task,
        architecture=m.architecture,
        state=m.state,
        ready=m.ready,
        error=m.error,
        context_length=m.context_length,
        labels=m.labels,
        provider=m.provider,
        is_default=m.is_default,
        parameters=m.parameters,
    )
