"""Request bodies and their rules: the one place for API defaults, ranges and field names.

REST validates bodies against these models; gRPC converts its messages to `SamplingOptions` so both
adapters share defaults, limits and error messages. Settings-dependent limits (max tokens, prompt
length, texts per request) are checked by the core, which knows the settings and the model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from service.api.errors import from_validation_error, invalid
from service.engine import Constraint, SamplingParams
from service.engine.limits import (
    MAX_LOGIT_BIAS,
    MAX_LOGIT_BIAS_ENTRIES,
    MAX_LOGPROBS,
    MAX_N,
    MAX_PENALTY,
    MAX_STOP_STRINGS,
    MAX_STOP_TOKEN_IDS,
    MIN_PENALTY,
    SEED_BOUND,
)

DEFAULT_MAX_TOKENS = 16  # as OpenAI's completions API
DEFAULT_TEMPERATURE = 1.0  # as OpenAI's: sample by default, temperature 0 is greedy
# A client's request id is echoed as the `x-request-id` header (REST) and initial metadata (gRPC), so it
# must be a legal header value: visible ASCII, no spaces. Anything else failed the response with a 500.
REQUEST_ID_PATTERN = r"^[!-~]{0,128}$"
RequestId = Annotated[str, Field(max_length=128, pattern=REQUEST_ID_PATTERN)]
MIN_TEMPERATURE = 1e-5


def _valid_unicode(value: str) -> str:
    """JSON can carry lone surrogates ("\\udc80") and our body parser maps bad UTF-8 bytes to them."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PydanticCustomError("invalid_utf8", "must be valid UTF-8 text") from exc
    return value


def _field_error(field: str, rule: str) -> PydanticCustomError:
    """A model-level check's error, carrying the field it concerns (errors.py appends it to the location)."""
    return PydanticCustomError("field_rule", rule, {"field": field})


Text = Annotated[str, AfterValidator(_valid_unicode)]
StopText = Annotated[str, Field(min_length=1), AfterValidator(_valid_unicode)]
TokenId = Annotated[int, Field(ge=0, lt=2**31)]
MaxTokens = Annotated[int, Field(ge=0)]
Temperature = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
TopK = Annotated[int, Field(ge=0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]
MinP = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
RepetitionPenalty = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
Penalty = Annotated[float, Field(ge=MIN_PENALTY, le=MAX_PENALTY, allow_inf_nan=False)]
N = Annotated[int, Field(ge=1, le=MAX_N)]
Seed = Annotated[int, Field(ge=0, lt=SEED_BOUND)]
Logprobs = Annotated[int, Field(ge=0, le=MAX_LOGPROBS)]
# Seconds a request may wait in the queue before it starts (the server's own limit applies too).
QueueTimeout = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
ModelName = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_valid_unicode)]


def _one_logit_bias_error(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """One message for the whole map (which entry, what is wrong), located at `logit_bias` itself:
    pydantic would otherwise put the client's key into the error's location."""
    try:
        return handler(value)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        keys = [p for p in err["loc"] if isinstance(p, str) and p != "[key]"]
        where = f"entry {keys[0][:32]!r}: " if keys else ""
        raise PydanticCustomError(
            "logit_bias",
            "{where}{msg} (give token ids as decimal strings, biases as numbers in [-100, 100])",
            {"where": where, "msg": err["msg"]},
        ) from None


# OpenAI's shape: {"<token id>": bias}; the engine checks the ids against the model's vocabulary.
LogitBias = Annotated[
    dict[
        Annotated[str, Field(pattern=r"^[0-9]{1,10}$")],
        Annotated[float, Field(ge=-MAX_LOGIT_BIAS, le=MAX_LOGIT_BIAS, allow_inf_nan=False)],
    ],
    Field(max_length=MAX_LOGIT_BIAS_ENTRIES),
    WrapValidator(_one_logit_bias_error),
]


class _Strict(BaseModel):
    """Unknown fields are errors: a misspelt parameter must not be ignored silently."""

    model_config = ConfigDict(extra="forbid")


def _schema_object(value: Any) -> dict[str, Any]:
    """A JSON Schema given as an object, or as JSON text (gRPC, and clients that send a string)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise PydanticCustomError("json_schema", "not valid JSON: {why}", {"why": str(exc)}) from None
    if not isinstance(value, dict):
        raise PydanticCustomError("json_schema", "must be a JSON Schema object")
    return value


SchemaObject = Annotated[Any, AfterValidator(_schema_object)]
ConstraintText = Annotated[str, Field(min_length=1), AfterValidator(_valid_unicode)]


class StructuredOutputs(_Strict):
    """vLLM's `structured_outputs`: exactly one of a JSON Schema, a regex, a choice, a grammar, or any
    JSON object. The generated text then matches it; completing it ends the sample ("stop")."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    json_schema: SchemaObject | None = Field(None, alias="json")
    regex: ConstraintText | None = None
    choice: list[ConstraintText] | None = Field(None, min_length=1)
    grammar: ConstraintText | None = None  # Lark, or GBNF (llama.cpp's), as llguidance reads them
    json_object: bool | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StructuredOutputs:
        given = [k for k in ("json_schema", "regex", "choice", "grammar") if getattr(self, k) is not None]
        given += ["json_object"] if self.json_object else []
        if len(given) != 1:
            raise PydanticCustomError(
                "structured_outputs", "give exactly one of json, regex, choice, grammar and json_object"
            )
        return self

    def constraint(self, where: str) -> Constraint:
        if self.json_schema is not None:
            return Constraint("json", json.dumps(self.json_schema), f"{where}.json")
        if self.regex is not None:
            return Constraint("regex", self.regex, f"{where}.regex")
        if self.choice is not None:
            return Constraint("choice", json.dumps(self.choice), f"{where}.choice")
        if self.grammar is not None:
            return Constraint("grammar", self.grammar, f"{where}.grammar")
        return Constraint("json", _ANY_OBJECT, f"{where}.json_object")


_ANY_OBJECT = json.dumps({"type": "object"})


class JsonSchemaFormat(BaseModel):
    """OpenAI's `response_format.json_schema` (`strict` is accepted: the schema is always enforced)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: Annotated[str, Field(max_length=64)] = "response"
    description: str | None = None
    schema_: SchemaObject = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    """OpenAI's `response_format`: "text" (no constraint), "json_object" or "json_schema"."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_when_asked(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise _field_error("json_schema", 'required when type is "json_schema"')
        return self

    def constraint(self, where: str) -> Constraint | None:
        if self.type == "json_object":
            return Constraint("json", _ANY_OBJECT, f"{where}.type")
        if self.type == "json_schema" and self.json_schema is not None:
            schema = json.dumps(self.json_schema.schema_)
            return Constraint("json", schema, f"{where}.json_schema.schema")
        return None


class SamplingOptions(_Strict):
    """Every decoding parameter with the service default; the same over native REST, OpenAI and gRPC."""

    max_tokens: MaxTokens = DEFAULT_MAX_TOKENS
    temperature: Temperature = DEFAULT_TEMPERATURE
    top_k: TopK = 0
    top_p: TopP = 1.0
    min_p: MinP = 0.0
    repetition_penalty: RepetitionPenalty = 1.0
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    stop: list[StopText] = Field(default_factory=list, max_length=MAX_STOP_STRINGS)
    stop_token_ids: list[TokenId] = Field(default_factory=list, max_length=MAX_STOP_TOKEN_IDS)
    ignore_eos: bool = False
    n: N = 1
    seed: Seed | None = None
    logprobs: Logprobs | None = None
    prompt_logprobs: bool = False
    min_tokens: MaxTokens = 0
    logit_bias: LogitBias = Field(default_factory=dict)
    structured_outputs: StructuredOutputs | None = None
    response_format: ResponseFormat | None = None

    # The two parameters the engine names differently (see to_engine); its errors name its own.
    ENGINE_NAMES: ClassVar[dict[str, str]] = {"max_new_tokens": "max_tokens", "min_new_tokens": "min_tokens"}

    @classmethod
    def api_name(cls, engine_field: str) -> str:
        """The name clients know an engine parameter by."""
        return cls.ENGINE_NAMES.get(engine_field, engine_field)

    @model_validator(mode="after")
    def _consistent(self) -> SamplingOptions:
        if self.max_tokens > 0 and self.min_tokens > self.max_tokens:
            raise _field_error("min_tokens", "must be <= max_tokens")
        if self.structured_outputs is not None and self.constraint_of("response_format") is not None:
            raise _field_error("structured_outputs", "give either structured_outputs or response_format")
        return self

    def constraint_of(self, which: str) -> Constraint | None:
        if which == "structured_outputs" and self.structured_outputs is not None:
            return self.structured_outputs.constraint(which)
        if which == "response_format" and self.response_format is not None:
            return self.response_format.constraint(which)
        return None

    def constraint(self) -> Constraint | None:
        """The output constraint, named by the field it came from (errors point there)."""
        return self.constraint_of("structured_outputs") or self.constraint_of("response_format")

    def to_engine(self, max_new_tokens: int | None = None) -> SamplingParams:
        """The engine's parameters; `max_new_tokens` overrides max_tokens (scoring asks for one)."""
        return SamplingParams(
            max_new_tokens=max_new_tokens if max_new_tokens is not None else self.max_tokens,
            # As vLLM: a temperature this small is greedy, and dividing by it would overflow the logits.
            temperature=self.temperature if self.temperature >= MIN_TEMPERATURE else 0.0,
            top_k=self.top_k,
            top_p=self.top_p,
            min_p=self.min_p,
            repetition_penalty=self.repetition_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            stop=tuple(self.stop),
            stop_token_ids=tuple(self.stop_token_ids),
            ignore_eos=self.ignore_eos,
            n=self.n,
            seed=self.seed,
            logprobs=self.logprobs,
            prompt_logprobs=self.prompt_logprobs,
            min_new_tokens=min(self.min_tokens, max_new_tokens or self.max_tokens),
            logit_bias={int(token): bias for token, bias in self.logit_bias.items()},
            constraint=self.constraint(),
        )


PROMPT_FIELDS = ("prompt", "prompt_token_ids")


def single_prompt(text: str | None, ids: list[int] | None) -> str | list[int]:
    """The one prompt of a native or gRPC request: exactly one of `prompt` and `prompt_token_ids`."""
    if (text is None) == (ids is None):
        raise invalid("prompt", "give exactly one of prompt and prompt_token_ids")
    return ids if ids is not None else text  # type: ignore[return-value]


def native_param(engine_field: str) -> str:
    """Where a native or gRPC request holds an engine parameter: the prompt fields at the top (as the
    request gave it), everything else under `params`."""
    if engine_field in PROMPT_FIELDS:
        return engine_field
    return "params." + SamplingOptions.api_name(engine_field)


class GenerateBody(_Strict):
    """POST /v1/generate: the JSON form of the proto's GenerateRequest, plus `stream`."""

    model: ModelName | None = None
    prompt: Text | None = None
    prompt_token_ids: list[TokenId] | None = None
    params: SamplingOptions = Field(default_factory=SamplingOptions)
    stream: bool = False
    request_id: RequestId | None = None
    timeout: QueueTimeout | None = None

    param = staticmethod(native_param)

    def the_prompt(self) -> str | list[int]:
        return single_prompt(self.prompt, self.prompt_token_ids)


class StreamOptions(_Strict):
    include_usage: bool = False


PromptTokens = Annotated[list[TokenId], Field(min_length=1)]


class _OpenAISampling(_Strict):
    """The sampling fields OpenAI's completions and chat completions share, plus vLLM's extensions
    (sent by the openai client through `extra_body`). A null means "the default", as in OpenAI's API."""

    model: ModelName | None = None
    temperature: Temperature | None = DEFAULT_TEMPERATURE
    top_p: TopP | None = 1.0
    n: N | None = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: list[StopText] | None = Field(None, max_length=MAX_STOP_STRINGS)
    seed: Seed | None = None
    presence_penalty: Penalty | None = 0.0
    frequency_penalty: Penalty | None = 0.0
    logit_bias: LogitBias | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    top_k: TopK | None = 0
    min_p: MinP | None = 0.0
    repetition_penalty: RepetitionPenalty | None = 1.0
    stop_token_ids: list[TokenId] | None = None
    ignore_eos: bool | None = False
    min_tokens: MaxTokens | None = 0
    # OpenAI's field (the completions API of the openai client sends it through `extra_body`), and vLLM's.
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None
    timeout: QueueTimeout | None = None  # our extension: seconds it may wait in the queue

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_constraint(self) -> _OpenAISampling:
        both = self.structured_outputs is not None and self.response_format is not None
        if both and self.response_format.type != "text":  # type: ignore[union-attr]
            raise _field_error("structured_outputs", "give either structured_outputs or response_format")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def _options(self, max_tokens: int | None, logprobs: int | None, **extra: Any) -> SamplingOptions:
        given = {
            "max_tokens": max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "n": self.n,
            "seed": self.seed,
            "logprobs": logprobs,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "logit_bias": self.logit_bias,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty,
            "stop_token_ids": self.stop_token_ids,
            "ignore_eos": self.ignore_eos,
            "min_tokens": self.min_tokens,
            "response_format": self.response_format,
            "structured_outputs": self.structured_outputs,
            **extra,
        }
        try:
            return SamplingOptions(**{k: v for k, v in given.items() if v is not None})
        except ValidationError as exc:  # rules across fields, e.g. min_tokens above the default max_tokens
            raise from_validation_error(exc) from None


class CompletionBody(_OpenAISampling):
    """POST /v1/completions, OpenAI's legacy completions API plus vLLM-style extensions."""

    prompt: Any
    max_tokens: MaxTokens | None = DEFAULT_MAX_TOKENS
    logprobs: Logprobs | None = None
    echo: bool | None = False
    best_of: N | None = None
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_shape(cls, value: Any) -> str | list[str] | list[int] | list[list[int]]:
        """Pick the shape first, then validate it: one clear message instead of one per union member."""
        if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            adapter: TypeAdapter[Any] = _TOKENS
        elif isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            adapter = _TOKEN_BATCH
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            adapter = _TEXTS
        elif isinstance(value, str):
            adapter = _TEXT
        else:
            raise PydanticCustomError("prompt", _PROMPT_SHAPE)
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = "".join(f"[{p}]" for p in err["loc"])
            detail = f"item {where}: {err['msg']}" if where else err["msg"]
            raise PydanticCustomError("prompt", "{detail}", {"detail": detail}) from None

    @model_validator(mode="after")
    def _supported(self) -> CompletionBody:
        if self.suffix:
            raise _field_error("suffix", "not supported")
        if self.best_of is not None and self.best_of != (self.n or 1):
            raise _field_error("best_of", "only best_of == n is supported")
        return self

    @staticmethod
    def param(engine_field: str) -> str:
        """OpenAI's name of an engine parameter: token ids are a `prompt` too, sampling fields are flat."""
        return "prompt" if engine_field in PROMPT_FIELDS else SamplingOptions.api_name(engine_field)

    def prompts(self) -> list[str | list[int]]:
        """The batch of prompts, each text or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and isinstance(p[0], int):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]

    def options(self) -> SamplingOptions:
        """The shared parameters; echo + logprobs returns the prompt's token logprobs (scoring)."""
        return self._options(
            self.max_tokens,
            self.logprobs,
            stop=list(self.stop or []),
            prompt_logprobs=bool(self.echo and self.logprobs is not None),
        )


MAX_MESSAGES = 1024
ChatRole = Literal["system", "developer", "user", "assistant"]
SpeakerName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\r\n]+$")]


def _text_content(value: Any) -> Any:
    """OpenAI content is a string or a list of parts; text parts are joined, other kinds refused."""
    if not isinstance(value, list):
        return value
    texts = []
    for part in value:
        if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise PydanticCustomError(
                "content", "only text parts are supported, not '{kind}'", {"kind": str(kind)[:32]}
            )
        texts.append(part["text"])
    return "".join(texts)


class ChatTextPart(_Strict):
    type: Literal["text"]
    text: Text


class ChatMessage(_Strict):
    """One message; `name` names its speaker where the template uses it."""

    role: ChatRole
    content: Annotated[Text | list[ChatTextPart], BeforeValidator(_text_content)]
    name: SpeakerName | None = None


class ChatCompletionBody(_OpenAISampling):
    """POST /v1/chat/completions: OpenAI's chat completions for models with a chat template."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    # Default: as many as the server allows (OpenAI's chat default is "up to the context").
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    logprobs: bool | None = False
    top_logprobs: Logprobs | None = None
    # Accepted only when empty or null: clients that always send them should still work.
    tools: list[Any] | None = None
    tool_choice: Literal["none", "auto"] | None = None
    parallel_tool_calls: bool | None = None
    # vLLM extension: end the prompt with the assistant's heading (default), or not.
    add_generation_prompt: bool = True

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionBody:
        if self.tools:
            raise _field_error("tools", "not supported (no tool calling)")
        if self.top_logprobs is not None and not self.logprobs:
            raise _field_error("top_logprobs", "needs logprobs: true")
        for name in ("max_completion_tokens", "max_tokens"):
            if getattr(self, name) == 0:
                raise _field_error(name, "must be >= 1")
        return self

    def messages_dicts(self) -> list[dict[str, Any]]:
        """What the template sees: role, content (text), and name when given."""
        return [m.model_dump(exclude_none=True) for m in self.messages]

    def options(self, default_max_tokens: int, default_stop: Sequence[str]) -> SamplingOptions:
        """The shared parameters; `default_stop` (the template's) applies when the request names none."""
        max_tokens = self.max_completion_tokens or self.max_tokens or default_max_tokens
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        stop = list(default_stop) if self.stop is None else list(self.stop)
        return self._options(max_tokens, logprobs, stop=stop)

    def param(self, engine_field: str) -> str:
        """The chat's name of an engine parameter: the prompt is the rendered `messages`, and the token
        limit is whichever of max_completion_tokens and max_tokens the client sent."""
        if engine_field in PROMPT_FIELDS:
            return "messages"
        if engine_field == "max_new_tokens":
            return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"
        return SamplingOptions.api_name(engine_field)


class TokenizeBody(_Strict):
    """POST /tokenize (vLLM's shape): a prompt, or chat messages rendered by the model's template."""

    model: ModelName | None = None
    prompt: Text | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1, max_length=MAX_MESSAGES)
    # Default as vLLM: true for a prompt, false for messages (the template places its own).
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True
    return_token_strs: bool = False

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeBody:
        if (self.prompt is None) == (self.messages is None):
            raise _field_error("prompt", "give exactly one of prompt and messages")
        return self

    def messages_dicts(self) -> list[dict[str, Any]]:
        return [m.model_dump(exclude_none=True) for m in self.messages or []]


class DetokenizeBody(_Strict):
    """POST /detokenize (vLLM's shape): token ids back to text."""

    model: ModelName | None = None
    tokens: list[TokenId]


_PROMPT_SHAPE = "must be a string, a non-empty list of strings, or token ids (a list of ints, or of lists)"
_TEXT: TypeAdapter[str] = TypeAdapter(Text)
_TEXTS: TypeAdapter[list[str]] = TypeAdapter(list[Text])
_TOKENS: TypeAdapter[list[int]] = TypeAdapter(PromptTokens)
_TOKEN_BATCH: TypeAdapter[list[list[int]]] = TypeAdapter(list[PromptTokens])


class SentimentBody(_Strict):
    """POST /v1/sentiment."""

    model: ModelName | None = None
    texts: list[Text] = Field(min_length=1)
    request_id: RequestId | None = None


# ---- Open Inference Protocol (KServe V2), REST -------------------------------------------------------
OipParameter = bool | int | float | str
OipName = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_valid_unicode)]
MAX_TENSOR_RANK = 8


class OipInput(_Strict):
    """One input tensor; its data is JSON (`data`) or raw bytes after the JSON header (binary extension,
    `parameters.binary_data_size`)."""

    name: OipName
    shape: list[Annotated[int, Field(ge=0, lt=2**63)]] = Field(max_length=MAX_TENSOR_RANK)
    datatype: Annotated[str, Field(max_length=16)]
    parameters: dict[str, OipParameter] | None = None
    data: Any = None


class OipRequestedOutput(_Strict):
    name: OipName
    parameters: dict[str, OipParameter] | None = None


class OipInferBody(_Strict):
    """POST /v2/models/{m}/infer: the protocol's inference request (its JSON part). The kserve SDK also
    names the model in the body; it must then match the path."""

    id: Annotated[str, Field(max_length=256), AfterValidator(_valid_unicode)] | None = None
    model_name: OipName | None = None
    model_version: Annotated[str, Field(max_length=64)] | None = None
    parameters: dict[str, OipParameter] | None = None
    inputs: list[OipInput] = Field(min_length=1)
    outputs: list[OipRequestedOutput] | None = None


class OipGenerateBody(_Strict):
    """POST /v2/models/{m}/generate(_stream): the generate extension's request; `parameters` are the
    sampling options of /v1/generate's `params` (plus `stream`, which the route decides)."""

    id: Annotated[str, Field(max_length=256), AfterValidator(_valid_unicode)] | None = None
    text_input: Text
    parameters: dict[str, Any] | None = None
