"""`GenerationEngine`: the asyncio-facing front of one generation model (tokenise, submit, stats, drain)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from service import metrics
from service.engine.constraints import (
    CompiledGrammar,
    Constraint,
    ConstraintError,
    ConstraintLimits,
    GrammarCompiler,
)
from service.engine.errors import EngineStoppedError, InvalidRequestError, PromptTooLongError
from service.engine.request import FinishEvent, GenerationRequest, RequestHandle, Usage
from service.engine.runner import ModelRunner
from service.engine.scheduler import Scheduler
from service.engine.sequence import Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineStats:
    """A snapshot for /readyz, /v1/models and logs."""

    model: str
    running: int
    waiting: int
    slots_used: int
    slots_total: int
    provider: str
    ready: bool


class GenerationEngine:
    """Continuous-batching generation for one model.

    Lifecycle: `start()` (blocking: warms up, then starts the scheduler thread; call it with
    `asyncio.to_thread` from async code), `submit()` from the event loop, `await stop(timeout)`.
    """

    def __init__(
        self,
        name: str,
        runner: ModelRunner,
        tokenizer: Tokenizer,
        eos_id: int | None,
        max_queue: int = 64,
        max_queue_time_s: float | None = None,
        max_prompt_tokens: int | None = None,
        context_length: int | None = None,
        recurrent_max_prompt_tokens: int = 32768,
        max_new_tokens: int = 512,
        prefill_chunk_tokens: int = 64,
        warmup: bool = True,
        constraint_limits: ConstraintLimits | None = None,
        grammar_cache_size: int = 256,
    ) -> None:
        self.name = name
        self.runner = runner
        self.tokenizer = tokenizer
        self.eos_id = eos_id
        # Prompts are bounded by the setting, else by the trained context (a recurrent model, which has
        # none, by its own default); never beyond the KV buffer.
        wanted = max_prompt_tokens or context_length or recurrent_max_prompt_tokens
        self.max_prompt_tokens = min(wanted, runner.max_len or (1 << 30))
        # The trained context (None for recurrent models, which have none): prompt + new tokens fit in it.
        self.context_length = context_length
        self.max_new_tokens = max_new_tokens
        self.max_queue_time_s = max_queue_time_s
        self._warmup = warmup
        self._prefill_chunk_tokens = prefill_chunk_tokens
        # Structured outputs are compiled against this model's own tokenizer.json, cached by hash.
        self.grammars = GrammarCompiler(
            tokenizer.to_str(), runner.vocab_size, eos_id, name, constraint_limits, grammar_cache_size
        )
        self._scheduler = Scheduler(
            runner, tokenizer, name, max_queue, prefill_chunk_tokens, self.grammars.text_tokens
        )
        self._handles: set[RequestHandle] = set()
        self._ready = False
        metrics.MODEL_READY.labels(model=name).set(0)

    @property
    def capacity(self) -> int:
        """Requests it holds at once, running and waiting: more than this are never admitted together."""
        return self.runner.max_slots + self._scheduler.max_queue

    @property
    def provider(self) -> str:
        return self.runner.provider

    @property
    def ready(self) -> bool:
        return self._ready

    def start(self) -> None:
        """Warm up the shapes requests will use, then start the scheduler thread."""
        if self._warmup:
            lengths = sorted({16, 64, self._prefill_chunk_tokens})
            self.runner.warmup(lengths)
        self._scheduler.start()
        self._ready = True
        metrics.MODEL_READY.labels(model=self.name).set(1)
        log.info(
            "model %s ready on %s with %d slots and %d ORT threads",
            self.name,
            self.provider,
            self.runner.max_slots,
            self.runner.session.threads,
        )

    def encode(self, request: GenerationRequest) -> list[int]:
        """Prompt token ids, checked against the limits: raises PromptTooLongError or InvalidRequestError
        naming the field the prompt came in (`prompt` or `prompt_token_ids`)."""
        if request.prompt_token_ids is not None:
            field = "prompt_token_ids"
            ids = list(request.prompt_token_ids)
            if any(t < 0 or t >= self.runner.vocab_size for t in ids):
                raise InvalidRequestError(field, f"ids must be in [0, {self.runner.vocab_size})")
        else:
            field = "prompt"
            ids = self.tokenizer.encode(request.prompt or "", add_special_tokens=False).ids
        if not ids:
            raise InvalidRequestError(field, "must contain at least one token")
        if len(ids) > self.max_prompt_tokens:
            raise PromptTooLongError(
                field, f"{len(ids)} tokens, the limit for {self.name!r} is {self.max_prompt_tokens}"
            )
        return ids

    async def compile_constraint(self, constraint: Constraint) -> CompiledGrammar:
        """Compile (or find in the cache) a structured-output constraint off the event loop.

        Raises ConstraintError (a ValueError naming the field) when it is invalid, too large, or takes
        longer than the limit to compile; the request is then never queued.
        """
        timeout = self.grammars.limits.compile_timeout_s
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.grammars.compile, constraint), timeout)
        except TimeoutError:
            # The library's own limits (fuel, grammar size) end the thread soon; its result is not cached.
            raise ConstraintError(
                constraint.field, f"compiling took longer than {timeout:g} s; simplify it"
            ) from None

    def check_context(self, prompt_tokens: int, max_new_tokens: int) -> None:
        """Prompt + max_new_tokens must fit the trained context (as vLLM's max_model_len): past it a
        Transformer's text degrades. A prompt that fills the context may still ask for the one token
        its last position predicts (scoring a prompt asks for one). Recurrent models have no limit."""
        if self.context_length is None:
            return
        room = max(self.context_length - prompt_tokens, 1)
        if max_new_tokens > room:
            raise InvalidRequestError(
                "max_new_tokens",
                f"at most {room} for this prompt: its {prompt_tokens} tokens and the new ones must fit the "
                f"context of {self.name!r} ({self.context_length} tokens)",
            )

    def submit(self, request: GenerationRequest, grammar: CompiledGrammar | None = None) -> RequestHandle:
        """Queue a request from a running event loop; events arrive on that loop.

        A request with `params.constraint` uses `grammar` when given (see compile_constraint), else
        compiles it here, on the calling thread.
        Raises QueueFullError (queue at its bound), EngineStoppedError (not started or draining),
        InvalidRequestError/PromptTooLongError (invalid request: the field and the rule; ConstraintError for
        a bad constraint).
        """
        params = request.params
        if params.max_new_tokens > self.max_new_tokens:
            raise InvalidRequestError("max_new_tokens", f"at most {self.max_new_tokens} on this server")
        if params.n > self.runner.max_slots:
            raise InvalidRequestError("n", f"at most {self.runner.max_slots} (the engine's slots)")
        outside = [t for t, _ in params.logit_bias if t >= self.runner.vocab_size]
        if outside:
            vocab = self.runner.vocab_size
            raise InvalidRequestError(
                "logit_bias", f"token id {outside[0]} is outside the vocabulary [0, {vocab})"
            )
        if not self._ready:
            raise EngineStoppedError(f"model {self.name!r} is not ready")
        self._scheduler.check_room()  # before tokenising: a refusal at a full server costs little
        prompt = self.encode(request)
        self.check_context(len(prompt), params.max_new_tokens)
        if params.constraint is None:
            grammar = None
        elif grammar is None or grammar.constraint != params.constraint:
            grammar = self.grammars.compile(params.constraint)
        loop = asyncio.get_running_loop()
        handle = RequestHandle(request, prompt, loop, self._scheduler.wake)
        stop_ids = set(params.stop_token_ids)
        if self.eos_id is not None and not params.ignore_eos:
            stop_ids.add(self.eos_id)
        job = Job(handle, np.asarray(prompt, dtype=np.int64), frozenset(stop_ids), grammar)
        self._scheduler.submit(job)
        self._handles.add(handle)
        limits = [t for t in (self.max_queue_time_s, request.queue_timeout) if t is not None]
        if limits:
            # The timer runs on the caller's loop; the scheduler thread never looks at the clock.
            timer = loop.call_later(min(limits), self._expire, job, min(limits))

            def forget(_: asyncio.Future[None]) -> None:
                timer.cancel()
                self._handles.discard(handle)

            handle.done.add_done_callback(forget)
        else:
            handle.done.add_done_callback(lambda _f: self._handles.discard(handle))
        return handle

    def check_room(self) -> None:
        """Raise QueueFullError now if a request would be refused (racy, cheap; submit checks exactly)."""
        self._scheduler.check_room()

    def _expire(self, job: Job, waited: float) -> None:
        """A request still waiting when its queue time runs out leaves the queue: it ends with
        "timeout" (the caller retries, perhaps elsewhere) and never takes a slot."""
        if not self._scheduler.expire(job):
            return  # admitted (or dropped) meanwhile: it runs as usual
        error = f"waited {waited:g} s in the queue of {self.name!r} without starting"
        usage = Usage(len(job.prompt), 0)
        for index in range(job.params.n):
            job.handle.deliver(FinishEvent(index, "timeout", usage=usage, error=error))

    @property
    def saturated(self) -> bool:
        """No slot and no queue place is free: a new request would be refused (read without the lock)."""
        return self._ready and not self._scheduler.has_room

    def stats(self) -> EngineStats:
        running, waiting = self._scheduler.counts()
        return EngineStats(
            model=self.name,
            running=running,
            waiting=waiting,
            slots_used=self._scheduler.slots.used,
            slots_total=self.runner.max_slots,
            provider=self.provider,
            ready=self._ready,
        )

    async def stop(self, drain_timeout: float = 25.0) -> None:
        """Drain: refuse new requests, let queued and running ones finish for up to `drain_timeout`
        seconds, cancel the rest, and join the scheduler thread."""
        self._ready = False
        metrics.MODEL_READY.labels(model=self.name).set(0)
        self._scheduler.close(cancel=False)
        pending = [h.done for h in self._handles if not h.done.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=drain_timeout)
            if late:
                log.warning("model %s: cancelling %d requests after the drain timeout", self.name, len(late))
                self._scheduler.close(cancel=True)
        await asyncio.to_thread(self._scheduler.join)
