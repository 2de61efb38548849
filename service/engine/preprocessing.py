"""A classifier's input policy from its manifest (docs/artifact-contract.md, `preprocessing`): how a
text becomes model inputs and how the inputs' outputs become the text's answer.

Training evaluates a classifier under one policy (training/long_documents.py); serving it under
another silently costs accuracy, so the service applies exactly what the manifest records:
- `truncate`: one input of at most `max_tokens` ids, cut by `truncation` (head, tail, head_tail);
- `windows`: windows of `max_tokens` ids (an appended EOS included), `window_stride` ids apart,
  the last one ending on the text's last token; the windows' class log-probabilities are pooled
  (`mean`, or `max`: the most confident window);
- `document_calibration` (optional, two classes, mean pooling): a rule for texts read as several
  windows, tuned on selection folds (training/calibrate.py): later windows weigh more, and the
  pooled log-odds are shifted and scaled (see DocumentCalibration).
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
class DocumentCalibration:
    """How the windows of a text read as several windows are pooled, tuned on selection folds.

    A classifier trained on sentences reads the windows of a review with a shifted prior (plot
    summary reads as mildly negative) and under-confident averaged log-odds, and the verdict sits
    in the closing windows. So window i of n weighs `1 + position_weight * i / (n - 1)` in the mean,
    and the pooled log-odds of the second label against the first become
    `log_odds_scale * (log_odds + log_odds_bias)`. Texts of one window are left as they are.
    """

    position_weight: float = 0.0
    log_odds_bias: float = 0.0
    log_odds_scale: float = 1.0

    LIMIT = 100.0  # far beyond any fitted value, and small enough that no pooled number overflows

    def __post_init__(self) -> None:
        values = (self.position_weight, self.log_odds_bias, self.log_odds_scale)
        if not all(np.isfinite(values)):
            raise ValueError(f"document_calibration values must be finite, got {values}")
        if not (0 <= self.position_weight <= self.LIMIT and 0 < self.log_odds_scale <= self.LIMIT):
            raise ValueError(
                f"document_calibration needs 0 <= position_weight <= {self.LIMIT:g} and "
                f"0 < log_odds_scale <= {self.LIMIT:g}"
            )
        if abs(self.log_odds_bias) > self.LIMIT:
            raise ValueError(f"document_calibration needs |log_odds_bias| <= {self.LIMIT:g}")


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """The classifier graph's softmax output in log space (float64, a zero floored at the tiniest
    positive double so that pooling never meets -inf)."""
    return np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), np.finfo(np.float64).tiny))


def pool_log_probs(
    logs: np.ndarray, pooling: str, calibration: DocumentCalibration | None = None
) -> np.ndarray:
    """One text's class log-probabilities from its inputs' (rows [inputs, classes]), renormalised.

    `mean` averages the rows (for two classes, the window log-odds), position-weighted under a
    calibration; `max` takes the row whose top class is the most confident. Training scores its
    documents with this same function (training/long_documents.py)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
    logs = np.asarray(logs, dtype=np.float64)
    if len(logs) == 0:
        raise ValueError("a text needs at least one window")
    if pooling == "max":
        pooled = logs[int(np.argmax(logs.max(axis=1)))]
    else:
        weights = np.ones(len(logs))
        if calibration is not None and len(logs) > 1:
            weights += calibration.position_weight * np.arange(len(logs)) / (len(logs) - 1)
        pooled = weights @ logs / weights.sum()
    pooled = pooled - np.logaddexp.reduce(pooled)
    if calibration is not None and len(logs) > 1 and len(pooled) == 2:
        odds = calibration.log_odds_scale * (pooled[1] - pooled[0] + calibration.log_odds_bias)
        pooled = np.array([-np.logaddexp(0.0, odds), -np.logaddexp(0.0, -odds)])
    return pooled


@dataclass(frozen=True)
class InputPolicy:
    """How a text becomes classifier inputs (ids without padding) and how their outputs are pooled."""

    max_tokens: int
    truncation: str = "head"
    long_documents: str = "truncate"
    window_stride: int = 0
    pooling: str = "mean"
    calibration: DocumentCalibration | None = None

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
        if self.calibration is not None and (self.long_documents, self.pooling) != ("windows", "mean"):
            raise ValueError("document_calibration applies to windows pooled by their mean")

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
        logs = log_probabilities(probabilities)
        return np.exp(pool_log_probs(logs, self.pooling, self.calibration)).astype(np.float32)


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
        calibration = section.get("document_calibration")
        if calibration is not None and len(raw.get("labels") or []) != 2:
            raise ValueError("document_calibration needs exactly two labels")
        policy = InputPolicy(
            max_tokens=int(section["max_tokens"]),
            truncation=str(section.get("truncation", "head")),
            long_documents=str(section.get("long_documents", "truncate")),
            window_stride=int(section.get("window_stride", 0)),
            pooling=str(section.get("pooling", "mean")),
            calibration=None if calibration is None else calibration_from_section(calibration),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"{raw.get('name')}: malformed preprocessing section ({exc})") from exc
    if context_length and policy.max_tokens > int(context_length):
        raise ManifestError(
            f"{raw.get('name')}: preprocessing.max_tokens exceeds the context {context_length}"
        )
    return policy


CALIBRATION_KEYS = ("position_weight", "log_odds_bias", "log_odds_scale")


def calibration_from_section(section: dict[str, Any]) -> DocumentCalibration:
    """The manifest's `preprocessing.document_calibration` (its `selection` record is informative).
    A misspelt key or a value that is not a number is refused, not read as the default."""
    if not isinstance(section, dict):
        raise ValueError(f"document_calibration must be an object, not {type(section).__name__}")
    unknown = set(section) - {*CALIBRATION_KEYS, "selection"}
    if unknown:
        raise ValueError(f"document_calibration has unknown keys {sorted(unknown)}")
    values = {key: section[key] for key in CALIBRATION_KEYS if key in section}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"document_calibration.{key} must be a number, not {value!r}")
    return DocumentCalibration(**{key: float(value) for key, value in values.items()})
