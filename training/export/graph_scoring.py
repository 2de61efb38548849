"""Score an exported decoder graph itself in onnxruntime: full-validation nats/char and greedy agreement.

Why: a quantized cache, quantized weights or a float16 variant changes what the graph computes, so its
quality must be measured on the graph, not on the torch model it came from. The validation text,
tokenization and windowing are training's own (training/tasks, training/metrics.py: non-overlapping
windows of the context length, then the tail), so a float32 graph reproduces the recipe's metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from training.data import load_lm_corpus
from training.export.ort_decoder import InPlaceDecoder
from training.recipe import Recipe
from training.tokenizer import encode

EVAL_BATCH = 16


@dataclass(frozen=True)
class TextStream:
    """Token ids of a text and its character count (nats/char divides by characters, not tokens)."""

    tokens: np.ndarray
    chars: int


def recipe_streams(recipe: Recipe, tokenizer_path: Path) -> tuple[TextStream, TextStream]:
    """(training split, validation split) of a language-model recipe, tokenized as training does."""
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    corpus = load_lm_corpus(recipe.data)
    return tuple(  # type: ignore[return-value]
        TextStream(np.asarray(encode(tokenizer, text), np.int64), len(text))
        for text in (corpus.train, corpus.val)
    )


def window_starts(tokens: int, context_length: int) -> list[int]:
    """Starts of the non-overlapping windows training's evaluation uses (the tail is scored apart)."""
    return [index * context_length for index in range(max(0, (tokens - 1) // context_length))]


def summed_nats(logits: np.ndarray, targets: np.ndarray) -> float:
    """Cross-entropy summed over [rows, length] targets, in float64."""
    flat = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    top = flat.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(flat - top).sum(axis=1)) + top[:, 0]
    return float((log_norm - flat[np.arange(flat.shape[0]), targets.reshape(-1)]).sum())


def graph_nats_per_char(
    session: ort.InferenceSession, stream: TextStream, context_length: int, batch: int = EVAL_BATCH
) -> float:
    """Full-stream nats/char of the graph: each window is prefilled on a fresh in-place cache."""
    tokens = stream.tokens
    starts = window_starts(tokens.size, context_length)
    nats = 0.0
    for first in range(0, len(starts), batch):
        rows = starts[first : first + batch]
        windows = np.stack([tokens[s : s + context_length + 1] for s in rows])
        logits = InPlaceDecoder(session, rows=len(rows)).step(0, windows[:, :-1].tolist())
        nats += summed_nats(logits, windows[:, 1:])
    tail = len(starts) * context_length
    if tail < tokens.size - 1:
        logits = InPlaceDecoder(session, rows=1).step(0, [tokens[tail:-1].tolist()])
        nats += summed_nats(logits, tokens[tail + 1 :][None])
    return nats / stream.chars


def greedy_tokens(
    session: ort.InferenceSession, prompts: Sequence[Sequence[int]], n_new: int
) -> list[list[int]]:
    """Greedy continuations of each prompt, decoded one token at a time through the in-place cache."""
    out = []
    for prompt in prompts:
        decoder = InPlaceDecoder(session, rows=1)
        logits = decoder.step(0, [list(prompt)])[0, -1]
        tokens: list[int] = []
        while len(tokens) < n_new:
            tokens.append(int(np.argmax(logits)))
            if len(tokens) < n_new:
                logits = decoder.step(0, [[tokens[-1]]])[0, -1]
        out.append(tokens)
    return out


def greedy_agreement(ours: Sequence[Sequence[int]], reference: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Per prompt the first index where `ours` leaves the reference (None: never), and the share of
    tokens before each first divergence (after one, the two continue from different texts)."""
    first: list[int | None] = []
    for a, b in zip(ours, reference, strict=True):
        where = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)
        first.append(where)
    n_new = len(reference[0]) if reference else 0
    agreed = sum(n_new if f is None else f for f in first)
    return {
        "prompts": len(first),
        "tokens": n_new,
        "agreement": agreed / (n_new * len(first)) if first else 1.0,
        "first_divergence": first,
    }


def validation_prompts(stream: TextStream, count: int, length: int = 32) -> list[list[int]]:
    """A fixed prompt set: `count` evenly spaced slices of the validation stream."""
    step = max(1, (stream.tokens.size - length) // max(1, count))
    return [stream.tokens[i * step : i * step + length].tolist() for i in range(count)]
