"""A classifier's input policy from its manifest (docs/artifact-contract.md, `preprocessing`): how a
text becomes model inputs and how the inputs' outputs become the text's answer.

Training evaluates a classifier under one policy (training/long_documents.py); serving it under
another silently costs accuracy, so the service applies exactly what the manifest records:
- `truncate`: one input of at most `max_tokens` ids, cut by `truncation` (head, tail, head_tail);
- `windows`: windows of `max_tokens` ids (an appended EOS included), `window_stride` ids apart,
  the last one ending on the text's last token; the windows' class log-probabilities are pooled
  (`mean`, or `max`: the most confident window).
A manifest without the section (exported before it existed) keeps the behaviour of that time:
the head of the text, up to the model's context (512 ids for a model without one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.engine.errors import ManifestError

TRUNCATIONS = ("head", "tail", "head_tail")
LONG_DOCUMENT_MODES = ("truncate", "windows")
POOLINGS = ("mean", "max")
HEAD_SHARE = 0.25  # head_tail: the share of the budget kept from the opening (as in training)
LEGACY_MAX_TOKENS = 512  # a model with no context and no preprocessing section


@dataclass(frozen=True)
class InputPolicy:
    """How a text becomes classifier inputs (ids without padding) and how their outputs are pooled."""

    max_tokens: int
    truncation: str = "head"
    long_documents: str = "truncate"
    window_stride: int = 0
    pooling: str = "mean"

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {TRUNCATIONS}, not {self.truncation!r}")
        if self.long_documents not in LONG_DOCUMENT_MODES:
            raise ValueError(
                f"long_documents must be one of {LONG_DOCUMENT_MODES}, not {self.long_documents!r}"
            )
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {self.pooling!r}")
        if self.long_documents == "windows" and self.window_stride < 1:
            raise ValueError(f"windows need a window_stride of at least 1, got {self.window_stride}")

    def inputs(self, ids: Sequence[int], eos_id: int | None) -> list[list[int]]:
        """The model inputs of one text's ids: one cut input, or its windows; EOS ends each when given."""
        room = self.max_tokens - (1 if eos_id is not None else 0)
        if room < 1:
            raise ValueError(f"max_tokens {self.max_tokens} leaves no room for text")
        ids = list(ids)
        if self.long_documents == "truncate":
            pieces = [truncate(ids, room, self.truncation)]
        else:
            pieces = [
                ids[start : start + room] for start in window_starts(len(ids), room, self.window_stride)
            ]
        return [[*piece, eos_id] if eos_id is not None else piece for piece in pieces]

    def pool(self, probabilities: np.ndarray) -> np.ndarray:
        """One text's class probabilities from its inputs' (rows): pooled in log space, renormalised."""
        if len(probabilities) == 1:
            return probabilities[0]
        logs = np.log(np.maximum(probabilities.astype(np.float64), np.finfo(np.float64).tiny))
        pooled = logs[int(np.argmax(logs.max(axis=1)))] if self.pooling == "max" else logs.mean(axis=0)
        weights = np.exp(pooled - pooled.max())
        return (weights / weights.sum()).astype(np.float32)


def truncate(ids: Sequence[int], room: int, policy: str) -> list[int]:
    """At most `room` ids: the head, the tail, or a quarter from the head and the rest from the tail.

    Training cuts its texts with this same function (training/long_documents.py), so the two cannot
    drift apart."""
    if policy not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, not {policy!r}")
    ids = list(ids)
    if len(ids) <= room:
        return ids
    if room <= 0:
        return []
    if policy == "head":
        return ids[:room]
    if policy == "tail":
        return ids[len(ids) - room :]
    head = int(room * HEAD_SHARE)
    return ids[:head] + ids[len(ids) - (room - head) :]


def window_starts(length: int, room: int, stride: int) -> list[int]:
    """Start offsets of the windows that cover `length` ids, `room` ids each, `stride` apart.

    The last window is aligned to the end of the text, so every window is full and the closing
    lines (where reviewers give their verdict) are always read whole. A text that fits is one window.
    """
    if room <= 0 or stride <= 0:
        raise ValueError(f"window room and stride must be positive, got {room} and {stride}")
    if length <= room:
        return [0]
    return [*range(0, length - room, stride), length - room]


def policy_from_manifest(raw: dict[str, Any], context_length: int | None) -> InputPolicy:
    """The manifest's `preprocessing`, or, for a manifest without one, the head up to the context."""
    section = raw.get("preprocessing")
    if section is None:
        return InputPolicy(max_tokens=int(context_length or LEGACY_MAX_TOKENS))
    try:
        policy = InputPolicy(
            max_tokens=int(section["max_tokens"]),
            truncation=str(section.get("truncation", "head")),
            long_documents=str(section.get("long_documents", "truncate")),
            window_stride=int(section.get("window_stride", 0)),
            pooling=str(section.get("pooling", "mean")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"{raw.get('name')}: malformed preprocessing section ({exc})") from exc
    if context_length and policy.max_tokens > int(context_length):
        raise ManifestError(
            f"{raw.get('name')}: preprocessing.max_tokens exceeds the context {context_length}"
        )
    return policy
