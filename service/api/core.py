"""The one core under REST and gRPC: model lookup, settings limits, submission, classification, listing,
and the per-request bookkeeping (one log line, request metrics, in-flight count for the drain).

Adapters only translate: their bodies into `SamplingOptions` and prompts, `ApiError` into statuses.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from tokenizers import Tokenizer

from service import metrics
from service.api.errors import ApiError, ErrorKind, from_engine_error, invalid
from service.api.generation import Generation, RequestRecord
from service.api.schemas import SamplingOptions
from service.chat_template import ChatTemplate
from service.engine import (
    Classification,
    EngineStoppedError,
    GenerationRequest,
    InvalidRequestError,
    QueueFullError,
    RequestHandle,
    RequestTooLargeError,
)
from service.registry import ModelEntry, ModelRegistry, ModelState
from service.settings import Settings

log = logging.getLogger("seqserve.requests")


@dataclass(frozen=True)
class ModelView:
    """A model as /v1/models and ListModels show it."""

    name: str
    task: str
    architecture: str
    state: str
    ready: bool
    error: str
    context_length: int
    labels: list[str]
    provider: str
    is_default: bool
    parameters: int
    created: int


@dataclass(frozen=True)
class TokenizerView:
    """What /tokenize and /detokenize need of a model."""

    model: str
    tokenizer: Tokenizer
    max_model_len: int | None  # the longest prompt it takes (the engine's max_prompt_tokens)
    chat_template: ChatTemplate | None


class InferenceCore:
    """Shared by the REST app and the gRPC servicer of one process."""

    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        self.draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # ---- request bookkeeping ------------------------------------------------------------------------
    def begin(self, route: str, request_id: str | None = None) -> RequestRecord:
        record = RequestRecord(route, request_id or uuid.uuid4().hex)
        self._in_flight += 1
        self._idle.clear()
        metrics.API_REQUESTS_IN_FLIGHT.labels(route=route).inc()
        return record

    def end(self, record: RequestRecord, status: int | None = None, error: str | None = None) -> None:
        """Close the record once: metrics, the request's log line, and the drain's in-flight count."""
        if record.closed:
            return
        record.closed = True
        if status is not None:
            record.status = status
        if error:
            record.error = error
        elapsed = time.perf_counter() - record.started
        metrics.REQUESTS_TOTAL.labels(route=record.route, model=record.model, status=str(record.status)).inc()
        metrics.API_REQUEST_LATENCY.labels(route=record.route).observe(elapsed)
        metrics.API_REQUESTS_IN_FLIGHT.labels(route=record.route).dec()
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()
        fields: dict[str, object] = {
            "request_id": record.request_id,
            "route": record.route,
            "model": record.model,
            "status": record.status,
            "duration_ms": round(elapsed * 1000, 2),
        }
        if record.first_token_at is not None:
            fields["ttft_ms"] = round((record.first_token_at - record.started) * 1000, 2)
        if record.prompt_tokens or record.completion_tokens:
            fields["prompt_tokens"] = record.prompt_tokens
            fields["completion_tokens"] = record.completion_tokens
        if record.finish_reasons:
            fields["finish"] = ",".join(sorted(set(record.finish_reasons)))
        if record.texts:
            fields["texts"] = record.texts
        if record.error:
            fields["error"] = record.error
        log.log(
            logging.WARNING if record.status >= 500 else logging.INFO, "request", extra={"fields": fields}
        )

    @asynccontextmanager
    async def track(self, route: str, request_id: str | None = None) -> AsyncIterator[RequestRecord]:
        """A record closed with the status the block ended with (ApiError, cancellation, crash)."""
        record = self.begin(route, request_id)
        try:
            yield record
        except ApiError as exc:
            self.end(record, exc.kind.http_status, exc.message)
            raise
        except (asyncio.CancelledError, GeneratorExit):  # a gRPC stream is closed when its client leaves
            self.end(record, ErrorKind.CANCELLED.http_status, "cancelled by the client")
            raise
        except BaseException as exc:
            self.end(record, 500, repr(exc))
            raise
        else:
            if not record.detached:
                self.end(record)

    def close_generation(self, gen: Generation) -> None:
        """However a stream ended: a generation still running lost its client, so stop it (slot freed
        at the next step) and log 499; a finished one is closed as it finished (its failure's status,
        else 200). Streams call it after their last message too, so that the log line and metrics
        are out before the client sees the end."""
        if not gen.done:
            gen.cancel()
            self.end(gen.record, ErrorKind.CANCELLED.http_status, "the client went away")
        elif failure := gen.failure():
            self.end(gen.record, failure.kind.http_status, failure.message)
        else:
            self.end(gen.record)

    def start_draining(self) -> None:
        self.draining = True

    async def wait_idle(self, timeout: float) -> bool:
        """True when every API request finished (responses written) within `timeout` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # ---- models -------------------------------------------------------------------------------------
    def _entry(self, name: str | None, task: str, record: RequestRecord) -> ModelEntry:
        if self.draining:
            raise ApiError(ErrorKind.UNAVAILABLE, "the server is shutting down; retry on another replica")
        wanted = name or self.registry.default_name(task)
        if wanted is None:
            raise ApiError(ErrorKind.NOT_FOUND, f"model: no {_TASK_NOUN[task]} model is served", "model")
        entry = self.registry.get(wanted)
        if entry is None:
            raise ApiError(ErrorKind.NOT_FOUND, f"model: {wanted!r} not found (see /v1/models)", "model")
        record.model = entry.name
        if entry.task is not None and entry.task != task:
            raise invalid(
                "model", f"{entry.name!r} is a {_TASK_NOUN[entry.task]} model, not a {_TASK_NOUN[task]} one"
            )
        if entry.state is not ModelState.READY:
            why = f": {entry.error}" if entry.error else ""
            raise ApiError(ErrorKind.UNAVAILABLE, f"model {entry.name!r} is {entry.state.value}{why}")
        return entry

    def saturated_generation_model(self, name: str | None) -> str | None:
        """The name of the generation model a request for `name` (None: the default) would be refused
        by for want of a slot and a queue place, else None (also when anything else is wrong with it:
        the route then answers that properly)."""
        if self.draining:
            return None
        wanted = name or self.registry.default_name("generate")
        entry = self.registry.get(wanted) if wanted else None
        if entry is None or entry.engine is None or entry.state is not ModelState.READY:
            return None
        return entry.name if entry.engine.saturated else None

    def models(self) -> list[ModelView]:
        defaults = {self.registry.default_name("generate"), self.registry.default_name("classify")}
        views = []
        for e in self.registry.entries():
            m = e.manifest
            views.append(
                ModelView(
                    name=e.name,
                    task=e.task or "",
                    architecture=m.architecture if m else "",
                    state=e.state.value,
                    ready=e.state is ModelState.READY,
                    error=e.error or "",
                    context_length=int(m.context_length or 0) if m else 0,
                    labels=list(m.labels or []) if m else [],
                    provider=e.provider or "",
                    is_default=e.name in defaults,
                    parameters=int(m.raw.get("parameters") or 0) if m else 0,
                    created=_mtime(e),
                )
            )
        return views

    def chat_template(self, record: RequestRecord, model: str | None) -> tuple[str, ChatTemplate]:
        """The generation model and its chat template; 400 naming the model when it has none."""
        entry = self._entry(model, "generate", record)
        if entry.chat_template is None:
            raise invalid(
                "model",
                f"{entry.name!r} has no chat template (its manifest has no chat.template); "
                "use /v1/completions with a prompt",
            )
        return entry.name, entry.chat_template

    def tokenizer(self, record: RequestRecord, model: str | None) -> TokenizerView:
        """Any served model's tokenizer (the default generation model when none is named)."""
        if self.draining:
            raise ApiError(ErrorKind.UNAVAILABLE, "the server is shutting down; retry on another replica")
        name = model or self.registry.default_name("generate") or self.registry.default_name("classify")
        entry = self.registry.get(name) if name else None
        if entry is None:
            raise ApiError(ErrorKind.NOT_FOUND, f"model: {name!r} not found (see /v1/models)", "model")
        record.model = entry.name
        if entry.state is not ModelState.READY:
            why = f": {entry.error}" if entry.error else ""
            raise ApiError(ErrorKind.UNAVAILABLE, f"model {entry.name!r} is {entry.state.value}{why}")
        if entry.engine is not None:
            bound = entry.engine.max_prompt_tokens
            return TokenizerView(
                entry.name, entry.engine.tokenizer, bound if bound < 1 << 30 else None, entry.chat_template
            )
        assert entry.classifier is not None
        return TokenizerView(entry.name, entry.classifier.tokenizer, entry.classifier.max_length, None)

    # ---- generation ---------------------------------------------------------------------------------
    async def submit(
        self,
        record: RequestRecord,
        model: str | None,
        prompts: Sequence[str | Sequence[int]],
        options: SamplingOptions,
        *,
        stream: bool,
        returns_prompt: bool = False,
        queue_timeout: float | None = None,
    ) -> Generation:
        """Queue one engine request per prompt (all or none) and return them as one Generation.

        `returns_prompt` (OpenAI echo) allows max_tokens 0, as prompt_logprobs does: scoring only.
        Without `stream` the engine hands the events over in one go at the end (no per-token wake-ups).
        A structured-output constraint is compiled (or found in the cache) first, off the event loop:
        an invalid one is a 400 naming its field, and nothing is queued.
        `queue_timeout` (seconds) bounds its wait in the queue, below the server's own limit.
        Invalid requests raise InvalidRequestError naming the field as the engine does: the adapter
        reports it under its own schema's name (errors.fields_named_by).
        """
        entry = self._entry(model, "generate", record)
        engine = entry.engine
        assert engine is not None
        score_only = options.max_tokens == 0
        if score_only and not (returns_prompt or options.prompt_logprobs):
            raise InvalidRequestError(
                "max_new_tokens", "must be >= 1 (0 only scores the prompt: ask for its logprobs)"
            )
        limit = self.settings.max_texts_per_request
        if len(prompts) > limit:
            raise InvalidRequestError("prompt", f"at most {limit} prompts per request")
        if len(prompts) > engine.capacity:
            # All or none: more prompts than its slots and queue hold could never be admitted together,
            # so a 429 would invite retries that cannot succeed.
            raise InvalidRequestError(
                "prompt",
                f"at most {engine.capacity} prompts per request for {entry.name!r} (its slots + queue)",
            )
        params = options.to_engine(max_new_tokens=1 if score_only else None)
        grammar = None
        if params.constraint is not None:
            try:
                engine.check_room()  # a full server refuses before it spends a compile
                grammar = await engine.compile_constraint(params.constraint)
            except (QueueFullError, EngineStoppedError) as exc:  # a bad constraint names its field itself
                raise from_engine_error(exc) from None
        handles: list[RequestHandle] = []
        try:
            for i, prompt in enumerate(prompts):
                rid = record.request_id if len(prompts) == 1 else f"{record.request_id}-{i}"
                text, ids = (prompt, None) if isinstance(prompt, str) else (None, tuple(prompt))
                request = GenerationRequest(
                    prompt=text,
                    prompt_token_ids=ids,
                    params=params,
                    request_id=rid,
                    stream=stream,
                    queue_timeout=queue_timeout,
                )
                handles.append(engine.submit(request, grammar))
        except BaseException as exc:
            for handle in handles:
                handle.cancel()
            if isinstance(exc, QueueFullError | EngineStoppedError):
                raise from_engine_error(exc) from None
            raise
        return Generation(entry.name, engine, handles, score_only, record, stream)

    # ---- classification -----------------------------------------------------------------------------
    async def classify(
        self, record: RequestRecord, model: str | None, texts: Sequence[str], field: str = "texts"
    ) -> tuple[str, list[Classification]]:
        """Classify texts; a refused text or a limit passed names `field` (e.g. `texts[2]`): 400 for
        a text with nothing to classify, 413 (gRPC RESOURCE_EXHAUSTED) past the size limits."""
        entry = self._entry(model, "classify", record)
        classifier = entry.classifier
        assert classifier is not None
        if not texts:
            raise invalid("texts", "must hold at least one text")
        if len(texts) > self.settings.max_texts_per_request:
            raise invalid("texts", f"at most {self.settings.max_texts_per_request} texts per request")
        record.texts = len(texts)
        try:
            return entry.name, await classifier.classify(texts)
        except (QueueFullError, EngineStoppedError) as exc:
            raise from_engine_error(exc) from None
        except InvalidRequestError as exc:
            param = field + exc.field.removeprefix("texts")
            kind = (
                ErrorKind.PAYLOAD_TOO_LARGE
                if isinstance(exc, RequestTooLargeError)
                else ErrorKind.INVALID_ARGUMENT
            )
            raise ApiError(kind, f"{param}: {exc.rule}", param) from None


_TASK_NOUN = {"generate": "generation", "classify": "classification"}


def _mtime(entry: ModelEntry) -> int:
    try:
        return int((entry.directory / "manifest.json").stat().st_mtime)
    except OSError:
        return 0
