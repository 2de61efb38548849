"""Per-request sampling parameters, validated at construction so the API can turn errors into 400s."""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.engine import limits
from service.engine.constraints import Constraint
from service.engine.errors import InvalidRequestError


@dataclass(frozen=True)
class SamplingParams:
    """How one request is decoded. Defaults are greedy with no penalties and eos as the stop token.

    Order of logits processing (the distribution `logprobs` reports, see sampling.py): the
    constraint's allowed-token mask, repetition penalty, presence/frequency penalties, logit bias,
    temperature, top-k, top-p, min-p.
    """

    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 means greedy
    top_k: int = 0  # 0 disables
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # CTRL/HF: over prompt + generated tokens
    presence_penalty: float = 0.0  # OpenAI: over generated tokens
    frequency_penalty: float = 0.0  # OpenAI: over generated tokens
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    n: int = 1
    seed: int | None = None
    logprobs: int | None = None  # None: off; k >= 0: chosen token's logprob plus the top-k
    prompt_logprobs: bool = False
    min_new_tokens: int = 0
    skip_special_tokens: bool = True
    # OpenAI's logit_bias: (token id, bias in [-100, 100]) pairs added to the logits; a dict is accepted.
    logit_bias: tuple[tuple[int, float], ...] = ()
    # Structured output: every sample follows this JSON schema, regex, choice or grammar; its mask is
    # applied before penalties, temperature and truncation, and completing it ends the sample ("stop").
    constraint: Constraint | None = None

    def __post_init__(self) -> None:
        # Lists from JSON become tuples so params stay hashable and immutable.
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        bias = self.logit_bias.items() if isinstance(self.logit_bias, dict) else self.logit_bias
        object.__setattr__(self, "logit_bias", tuple(sorted((int(t), float(b)) for t, b in bias)))
        _check(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        _check(_finite(self.temperature) and self.temperature >= 0.0, "temperature", "must be >= 0")
        _check(self.top_k >= 0, "top_k", "must be >= 0 (0 disables)")
        _check(_finite(self.top_p) and 0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]")
        _check(_finite(self.min_p) and 0.0 <= self.min_p <= 1.0, "min_p", "must be in [0, 1]")
        _check(
            _finite(self.repetition_penalty) and self.repetition_penalty > 0.0,
            "repetition_penalty",
            "must be > 0",
        )
        low, high = limits.MIN_PENALTY, limits.MAX_PENALTY
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            _check(_finite(value) and low <= value <= high, name, f"must be in [{low:g}, {high:g}]")
        _check(all(isinstance(s, str) and s for s in self.stop), "stop", "must be non-empty strings")
        _check(
            len(self.stop) <= limits.MAX_STOP_STRINGS,
            "stop",
            f"at most {limits.MAX_STOP_STRINGS} stop strings",
        )
        _check(all(t >= 0 for t in self.stop_token_ids), "stop_token_ids", "must be >= 0")
        _check(
            len(self.stop_token_ids) <= limits.MAX_STOP_TOKEN_IDS,
            "stop_token_ids",
            f"at most {limits.MAX_STOP_TOKEN_IDS} ids",
        )
        _check(1 <= self.n <= limits.MAX_N, "n", f"must be in [1, {limits.MAX_N}]")
        _check(self.seed is None or 0 <= self.seed < limits.SEED_BOUND, "seed", "must be in [0, 2**64)")
        _check(
            self.logprobs is None or 0 <= self.logprobs <= limits.MAX_LOGPROBS,
            "logprobs",
            f"must be in [0, {limits.MAX_LOGPROBS}]",
        )
        bound = limits.MAX_LOGIT_BIAS
        _check(len(self.logit_bias) <= limits.MAX_LOGIT_BIAS_ENTRIES, "logit_bias", "too many entries")
        _check(all(t >= 0 for t, _ in self.logit_bias), "logit_bias", "token ids must be >= 0")
        _check(
            all(_finite(b) and -bound <= b <= bound for _, b in self.logit_bias),
            "logit_bias",
            f"biases must be in [{-bound:g}, {bound:g}]",
        )
        _check(
            0 <= self.min_new_tokens <= self.max_new_tokens,
            "min_new_tokens",
            "must be in [0, max_new_tokens]",
        )

    @property
    def greedy(self) -> bool:
        """Temperature 0 picks the argmax; the RNG is then never consulted."""
        return self.temperature == 0.0


def _finite(x: float) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _check(ok: bool, name: str, rule: str) -> None:
    if not ok:
        raise InvalidRequestError(name, rule)
