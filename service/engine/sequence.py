"""Per-sample state inside the scheduler: one `Sequence` per slot, one `Job` per submitted request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from tokenizers import Tokenizer

from service.engine.constraints import CompiledGrammar
from service.engine.detokenizer import IncrementalDetokenizer
from service.engine.params import SamplingParams
from service.engine.request import RequestHandle
from service.engine.sampling import SamplingRow, plain_greedy, plain_temperature
from service.engine.stop_strings import StopStringMatcher


@dataclass
class Job:
    """A submitted request: its handle, prompt, and (once admitted) its n sequences."""

    handle: RequestHandle
    prompt: np.ndarray
    stop_ids: frozenset[int]
    grammar: CompiledGrammar | None = None  # the compiled params.constraint; each sample copies its matcher
    sequences: list[Sequence] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)  # reserved at admission, one per sample
    admitted_at: float | None = None
    first_token_at: float | None = None
    prompt_logprobs: list[float | None] | None = None
    last_prompt_logits: np.ndarray | None = None  # last row of the previous prefill chunk (prompt logprobs)
    finished: int = 0
    held: list = field(default_factory=list)  # events of a non-streaming request, delivered at the end

    @property
    def params(self) -> SamplingParams:
        return self.handle.request.params

    @property
    def done(self) -> bool:
        return self.finished == len(self.sequences) and bool(self.sequences)


class Sequence:
    """One sample being generated in one slot: sampling state, detokeniser, stop-string matcher."""

    def __init__(
        self,
        job: Job,
        index: int,
        slot: int,
        tokenizer: Tokenizer,
        vocab_size: int,
        rng: np.random.Generator,
        decode_cache: dict[int, str] | None = None,
    ) -> None:
        params = job.params
        self.job = job
        self.index = index
        self.slot = slot
        self.prefilled = 0
        self.next_token: int | None = None  # sampled but not yet fed to the model
        self.batch_index: int | None = None  # its row in the decode batch while it decodes
        self.finished = False
        self.last_token_at: float | None = None
        self.detokenizer = IncrementalDetokenizer(tokenizer, params.skip_special_tokens, decode_cache)
        self.stopper = StopStringMatcher(params.stop)
        # Structured output: the grammar state of this sample, advanced by every token it generates.
        self.matcher = job.grammar.matcher() if job.grammar is not None else None
        # A unary request without stop strings needs no text until it ends: its tokens are decoded
        # in one call at the finish (FinishEvent.text) instead of once per token.
        self.lazy_text = not job.handle.request.stream and not params.stop
        # Token counts feed only the penalties: requests without them skip the bookkeeping.
        self._counts_tokens = (
            params.repetition_penalty != 1.0
            or params.presence_penalty != 0.0
            or params.frequency_penalty != 0.0
        )
        counts = np.zeros(vocab_size, dtype=np.int32)
        seen = np.zeros(vocab_size, dtype=bool)
        if params.repetition_penalty != 1.0:
            seen[job.prompt[(job.prompt >= 0) & (job.prompt < vocab_size)]] = True
        self.row = SamplingRow(
            params=params,
            rng=rng,
            generated_counts=counts,
            seen=seen,
            num_generated=0,
            suppress_ids=tuple(sorted(job.stop_ids)) if params.min_new_tokens else (),
            plain_greedy=plain_greedy(params),
            plain_temperature=plain_temperature(params),
        )

    @property
    def prefill_done(self) -> bool:
        return self.prefilled >= len(self.job.prompt)

    @property
    def generated(self) -> int:
        return self.row.num_generated

    def record(self, token: int) -> float:
        """Count a generated token for the penalties; return the seconds since the previous token."""
        self.row.num_generated += 1
        if self._counts_tokens and 0 <= token < len(self.row.generated_counts):
            self.row.generated_counts[token] += 1
            self.row.seen[token] = True
        now = time.perf_counter()
        gap = 0.0 if self.last_token_at is None else now - self.last_token_at
        self.last_token_at = now
        return gap


def request_rngs(seed: int | None, n: int) -> list[np.random.Generator]:
    """One PCG64 stream per sample: seeded requests are reproducible, and the n samples differ."""
    children = np.random.SeedSequence(seed).spawn(n)
    return [np.random.Generator(np.random.PCG64(child)) for child in children]
