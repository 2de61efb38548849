"""The inference engine: continuous batching over an in-place KV cache, and a dynamic classifier batcher.

Public interface (everything the REST/gRPC adapters need)::

    from service.engine import (
        load_generation_model, load_classifier,           # artifact folder -> engine / batcher
        GenerationEngine, GenerationRequest, SamplingParams,
        RequestHandle, TokenEvent, FinishEvent, Usage, GenerationResult,
        ClassifierBatcher, Classification,
        QueueFullError, EngineStoppedError, InvalidRequestError, PromptTooLongError,
        ModelIntegrityError, ManifestError,
    )

    engine = load_generation_model(Path("exported_models/shakespeare-gpt"), settings)
    await asyncio.to_thread(engine.start)               # warm-up + scheduler thread (blocking)
    handle = engine.submit(GenerationRequest(prompt="ROMEO:", params=SamplingParams(max_new_tokens=64)))
    async for event in handle:                          # TokenEvent..., FinishEvent per sample
        ...                                             # event.index tells the sample (n > 1)
    handle.cancel()                                     # e.g. client disconnected: slot freed next step
    result = await handle.result()                      # unary: texts, token ids, logprobs, usage
    # For unary endpoints submit GenerationRequest(..., stream=False): events arrive in one hand-over
    # at the end (and, without stop strings, the text comes whole in the FinishEvent).
    engine.stats()                                      # running, waiting, slots used/total, provider
    await engine.stop(drain_timeout=25)                 # drain, then cancel leftovers

    clf = load_classifier(Path("exported_models/sst2-transformer"), settings)
    await asyncio.to_thread(clf.start)
    [c.label for c in await clf.classify(["a fine film"])]

Structured outputs: `SamplingParams(constraint=Constraint("json", schema_text, field="..."))` (also
"regex", "choice", "grammar"); `await engine.compile_constraint(c)` compiles it off the loop before
submission (`engine.submit(request, grammar)`); a completed constraint finishes with "stop".
Errors: `submit` raises QueueFullError (-> 429), EngineStoppedError (-> 503) and InvalidRequestError
(-> 400, a ValueError; PromptTooLongError is one): `.field` names the parameter, `.rule` the rule.
SamplingParams validates at construction the same way. Prompt + max_new_tokens must fit the model's
trained context (`context_length`; recurrent models have none).
Finish reasons: "stop" (eos, stop token id, or stop string), "length" (max_new_tokens or the end of
the cache), "cancelled", "error" (a model failure; `FinishEvent.error` says what: a batched run that raises is
re-run row by row, so only a request whose row fails on its own ends so), "timeout" (it
waited in the queue longer than `GenerationRequest.queue_timeout` or the engine's
`max_queue_time_s` and never started). Events reach the handle through `RequestHandle.deliver_all`,
which the scheduler thread schedules on the handle's loop.
Logprobs are the log-softmax of the processed distribution the token was drawn from (after
penalties, temperature, top-k/top-p/min-p; temperature 1 for greedy rows); prompt logprobs are from
the raw prefill logits. Metrics: the engine updates every `seqserve_*` metric in service.metrics
except `seqserve_requests_total`, whose route and status only the API knows.
"""

from service.engine.batcher import BatchRecord, Classification, ClassifierBatcher
from service.engine.constraints import CompiledGrammar, Constraint, ConstraintError
from service.engine.engine import EngineStats, GenerationEngine
from service.engine.errors import (
    EngineError,
    EngineStoppedError,
    InvalidRequestError,
    ManifestError,
    ModelIntegrityError,
    PromptTooLongError,
    QueueFullError,
    RequestTooLargeError,
)
from service.engine.loader import load_classifier, load_generation_model
from service.engine.manifest import Manifest, read_manifest
from service.engine.params import SamplingParams
from service.engine.request import (
    CompletionOutput,
    Event,
    FinishEvent,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    RequestHandle,
    TokenEvent,
    Usage,
)

__all__ = [
    "BatchRecord",
    "Classification",
    "ClassifierBatcher",
    "CompiledGrammar",
    "CompletionOutput",
    "Constraint",
    "ConstraintError",
    "EngineError",
    "EngineStats",
    "EngineStoppedError",
    "Event",
    "FinishEvent",
    "FinishReason",
    "GenerationEngine",
    "GenerationRequest",
    "GenerationResult",
    "InvalidRequestError",
    "Manifest",
    "ManifestError",
    "ModelIntegrityError",
    "PromptTooLongError",
    "QueueFullError",
    "RequestHandle",
    "RequestTooLargeError",
    "SamplingParams",
    "TokenEvent",
    "Usage",
    "load_classifier",
    "load_generation_model",
    "read_manifest",
]
