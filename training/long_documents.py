"""How a classifier fits a text longer than its input budget: keep the head, the tail, or both.

Full movie reviews (polarity-v2) run to 700-1000 BPE tokens, and a reviewer's verdict tends to sit in
the closing lines, with the set-up in the opening ones. `head_tail` keeps both ends and drops the
middle (mostly plot summary): Sun et al. (2019, "How to Fine-Tune BERT for Text Classification?")
found head+tail the best truncation on IMDb, beating head-only, tail-only and chunked averaging.
We keep their proportions: a quarter of the budget for the head, the rest for the tail.
"""

from __future__ import annotations

from collections.abc import Sequence

# The cut and the windows are the service's own functions, so training evaluates exactly what is served.
from service.engine.preprocessing import (
    HEAD_SHARE,
    LONG_DOCUMENT_MODES,
    POOLINGS,
    TRUNCATIONS,
    truncate,
    window_starts,
)

__all__ = [
    "HEAD_SHARE",
    "LONG_DOCUMENT_MODES",
    "POOLINGS",
    "TRUNCATIONS",
    "pool_log_probabilities",
    "split_windows",
    "truncate",
    "window_starts",
]


def split_windows(ids: Sequence[int], room: int, stride: int) -> list[list[int]]:
    """`ids` cut into windows of `room` ids (see `window_starts`); a text that fits comes back whole."""
    ids = list(ids)
    return [ids[start : start + room] for start in window_starts(len(ids), room, stride)]


def pool_log_probabilities(window_log_probs: Sequence[Sequence[float]], pooling: str) -> list[float]:
    """One text's class log-probabilities from its windows' (for two classes: pooled log-odds).

    `mean` averages the windows' log-probabilities (for two classes, the mean of the window
    log-odds); `max` takes the window whose top class is the most confident. The result is
    renormalised, so it is again a distribution's logarithm.
    """
    import math

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
    rows = [list(row) for row in window_log_probs]
    if not rows:
        raise ValueError("a text needs at least one window")
    if pooling == "max":
        pooled = max(rows, key=lambda row: max(row))
    else:
        pooled = [sum(column) / len(rows) for column in zip(*rows, strict=True)]
    top = max(pooled)
    norm = top + math.log(sum(math.exp(value - top) for value in pooled))
    return [value - norm for value in pooled]
