"""Structured generation: what a constraint is, and how it is compiled against a model's tokenizer.

The library is llguidance (bench/structured_masks.py measured it against xgrammar and outlines-core;
docs/api.md has the figures and the reasons): it reads the model's own tokenizer.json, takes JSON
schemas, regexes, choices and Lark/GBNF grammars, bounds its work with explicit limits, and releases
the GIL while it computes masks. Compiled grammars are cached by the hash of what was compiled, so
a schema sent again is not compiled again (counted in `seqserve_grammar_cache_total`).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

import llguidance
import llguidance.numpy as llnp
import numpy as np
from tokenizers import Tokenizer

from service import metrics
from service.engine.errors import InvalidRequestError
from service.engine.masks import unpack_bitmask

ConstraintKind = Literal["json", "regex", "choice", "grammar"]


# JSON is laid out as `json.dumps` does (", " and ": "), with no other whitespace: a free whitespace
# rule lets a small model pad with newlines until max_tokens (measured: the committed models do).
# A schema can ask for more with llguidance's "x-guidance" key (e.g. {"whitespace_flexible": true}).
JSON_LAYOUT: dict[str, object] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class ConstraintError(InvalidRequestError):
    """An invalid or too costly constraint (HTTP 400): `field` is the request field that carried it."""


@dataclass(frozen=True)
class Constraint:
    """One request's output format. `spec` is JSON text for "json" (a JSON Schema) and "choice" (a list
    of strings), the pattern for "regex", and Lark or GBNF text for "grammar". `field` names where the
    caller put it, so errors point there."""

    kind: ConstraintKind
    spec: str
    field: str = field(default="structured_outputs", compare=False)

    @property
    def key(self) -> str:
        """The cache key: a hash of what is compiled (not of the field it came from)."""
        return hashlib.sha256(f"{self.kind}\0{self.spec}".encode()).hexdigest()


@dataclass(frozen=True)
class ConstraintLimits:
    """Bounds on what one constraint may cost: its text, its grammar size, its compile time."""

    max_chars: int = 65536
    max_choices: int = 1024
    compile_timeout_s: float = 5.0
    max_grammar_size: int = 200_000  # llguidance's symbols in productions (its default is 500k)
    initial_lexer_fuel: int = 1_000_000  # about 20 ms of lexer construction (llguidance: ~50k/ms)


class CompiledGrammar:
    """A compiled constraint: a matcher in its start state, copied for every sample that uses it."""

    def __init__(self, constraint: Constraint, template: llguidance.LLMatcher) -> None:
        self.constraint = constraint
        self._template = template

    def matcher(self) -> llguidance.LLMatcher:
        return self._template.deep_copy()

    def for_constraint(self, constraint: Constraint) -> CompiledGrammar:
        """The same grammar for an equal constraint from another field (errors name that field)."""
        return CompiledGrammar(constraint, self._template)


def grammar_text(constraint: Constraint) -> str:
    """The llguidance grammar of a constraint; raises ConstraintError for text that does not parse."""
    kind, spec, name = constraint.kind, constraint.spec, constraint.field
    try:
        if kind == "json":
            return llguidance.LLMatcher.grammar_from_json_schema(spec, defaults=JSON_LAYOUT)
        if kind == "regex":
            return llguidance.LLMatcher.grammar_from_regex(spec)
        if kind == "choice":
            options = json.loads(spec)
            lark = "start: " + " | ".join(json.dumps(option) for option in options)
            return llguidance.LLMatcher.grammar_from_lark(lark)
        return llguidance.grammar_from("grammar", spec)  # Lark, or GBNF converted to Lark
    except Exception as exc:  # the text is the caller's: whatever it makes the library raise is a 400
        raise ConstraintError(name, f"{_first_line(str(exc))}") from None


class GrammarCompiler:
    """Compiles constraints for one model's tokenizer and keeps the most recent `cache_size` of them.

    Thread-safe: the API compiles in worker threads while the scheduler thread copies matchers.
    """

    def __init__(
        self,
        tokenizer_json: str,
        vocab_size: int,
        eos_id: int | None,
        model_name: str,
        limits: ConstraintLimits | None = None,
        cache_size: int = 256,
    ) -> None:
        self.vocab_size = vocab_size
        self.limits = limits or ConstraintLimits()
        self._tokenizer_json = tokenizer_json
        self._eos_id = eos_id
        self._tokenizer: llguidance.LLTokenizer | None = None  # built on first use (~10 ms)
        # Tokens that are text, or eos: a constraint whose first mask allows none of them cannot start.
        specials = Tokenizer.from_str(tokenizer_json).get_added_tokens_decoder()
        self.text_tokens = np.array(
            [i == eos_id or not (i in specials and specials[i].special) for i in range(vocab_size)]
        )
        self._cache: OrderedDict[str, CompiledGrammar] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._hits = metrics.GRAMMAR_CACHE.labels(model=model_name, result="hit")
        self._misses = metrics.GRAMMAR_CACHE.labels(model=model_name, result="miss")
        self._compile_time = metrics.GRAMMAR_COMPILE_TIME.labels(model=model_name)

    @property
    def tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = _llg_tokenizer(self._tokenizer_json, self.vocab_size, self._eos_id)
            return self._tokenizer

    def check(self, constraint: Constraint) -> None:
        """The cheap checks (size, shape) that need no compilation."""
        limits, name = self.limits, constraint.field
        if not constraint.spec.strip():
            raise ConstraintError(name, "must not be empty")
        if len(constraint.spec) > limits.max_chars:
            size = len(constraint.spec)
            raise ConstraintError(name, f"{size} characters, the limit is {limits.max_chars}")
        if constraint.kind == "choice":
            options = json.loads(constraint.spec)
            if not options or len(options) > limits.max_choices:
                raise ConstraintError(name, f"give 1 to {limits.max_choices} choices")
            if not all(isinstance(o, str) and o for o in options):
                raise ConstraintError(name, "every choice must be a non-empty string")

    def compile(self, constraint: Constraint) -> CompiledGrammar:
        """The cached grammar, or a new one; raises ConstraintError naming the field when it is invalid,
        too large, or compiles for longer than the limit."""
        key = constraint.key
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
        if cached is not None:
            self._hits.inc()
            return cached.for_constraint(constraint)
        self.check(constraint)
        self._misses.inc()
        started = time.perf_counter()
        template = self._build(constraint)
        elapsed = time.perf_counter() - started
        self._compile_time.observe(elapsed)
        if elapsed > self.limits.compile_timeout_s:
            raise ConstraintError(
                constraint.field,
                f"compiling took {elapsed:.1f} s, the limit is "
                f"{self.limits.compile_timeout_s:g} s; simplify it",
            )
        compiled = CompiledGrammar(constraint, template)
        with self._lock:
            self._cache[key] = compiled
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return compiled

    def _build(self, constraint: Constraint) -> llguidance.LLMatcher:
        limits = llguidance.LLParserLimits(
            max_grammar_size=self.limits.max_grammar_size,
            initial_lexer_fuel=self.limits.initial_lexer_fuel,
            verbose_errors=False,
        )
        grammar = grammar_text(constraint)
        try:
            matcher = llguidance.LLMatcher(self.tokenizer, grammar, log_level=0, limits=limits)
        except Exception as exc:  # documented not to raise for bad grammars; kept a 400 if it ever does
            raise ConstraintError(constraint.field, f"{_first_line(str(exc))}") from None
        if matcher.is_error():
            raise ConstraintError(constraint.field, f"{_first_line(matcher.get_error())}")
        # The first mask does the lazy part of the work: errors and cost show here, not mid-batch.
        probe_matcher = matcher.deep_copy()
        probe = llnp.allocate_token_bitmask(1, self.vocab_size)
        llnp.fill_next_token_bitmask(probe_matcher, probe)
        if probe_matcher.is_error():
            raise ConstraintError(constraint.field, f"{_first_line(probe_matcher.get_error())}")
        if not unpack_bitmask(probe, self.vocab_size)[0, self.text_tokens].any():
            raise ConstraintError(constraint.field, "no token of this model's vocabulary can start it")
        return matcher


def _llg_tokenizer(tokenizer_json: str, vocab_size: int, eos_id: int | None) -> llguidance.LLTokenizer:
    """llguidance reads byte-level BPE, Metaspace and byte-fallback tokenizer.json files itself. For the
    others (e.g. a character-level WordLevel vocabulary) each token's bytes are its decoded text."""
    try:
        return llguidance.LLTokenizer(tokenizer_json, n_vocab=vocab_size, eos_token=eos_id)
    except ValueError:
        pass
    hf = Tokenizer.from_str(tokenizer_json)
    specials = sorted(i for i, t in hf.get_added_tokens_decoder().items() if t.special)
    size = max(vocab_size, hf.get_vocab_size())
    tokens = [hf.decode([i], skip_special_tokens=False).encode() for i in range(size)]

    class _Wrapped:
        """What llguidance's TokenizerWrapper reads: token bytes, special ids, eos, and an encoder."""

        def __init__(self) -> None:
            self.tokens = tokens
            self.special_token_ids = specials
            self.eos_token_id = eos_id if eos_id is not None else (specials[-1] if specials else 0)
            self.bos_token_id = None

        def __call__(self, text: str | bytes) -> list[int]:
            if isinstance(text, bytes):
                text = text.decode("utf-8", errors="replace")
            return hf.encode(text, add_special_tokens=False).ids

    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Wrapped()), n_vocab=size)


def _first_line(message: str) -> str:
    """llguidance errors carry a caret diagram on later lines: keep the first line and the reason."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return "invalid"
    why = next((line.removeprefix("error:").strip() for line in lines[1:] if line.startswith("error:")), "")
    return (f"{lines[0].rstrip(':')}: {why}" if why else lines[0])[:300]
