"""How a classifier fits a text longer than its input budget: keep the head, the tail, or both.

Full movie reviews (polarity-v2) run to 700-1000 BPE tokens, and a reviewer's verdict tends to sit in
the closing lines, with the set-up in the opening ones. `head_tail` keeps both ends and drops the
middle (mostly plot summary): Sun et al. (2019, "How to Fine-Tune BERT for Text Classification?")
found head+tail the best truncation on IMDb, beating head-only, tail-only and chunked averaging.
We keep their proportions: a quarter of the budget for the head, the rest for the tail.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# The cut and the windows are the service's own functions, so training evaluates exactly what is served.
from service.engine.preprocessing import (
    HEAD_SHARE,
    LONG_DOCUMENT_MODES,
    POOLINGS,
    TRUNCATIONS,
    DocumentCalibration,
    pool_log_probs,
    truncate,
    window_starts,
)

__all__ = [
    "HEAD_SHARE",
    "LONG_DOCUMENT_MODES",
    "POOLINGS",
    "TRUNCATIONS",
    "DocumentCalibration",
    "pool_log_probabilities",
    "split_windows",
    "truncate",
    "window_starts",
]


def split_windows(ids: Sequence[int], room: int, stride: int) -> list[list[int]]:
    """`ids` cut into windows of `room` ids (see `window_starts`); a text that fits comes back whole."""
    ids = list(ids)
    return [ids[start : start + room] for start in window_starts(len(ids), room, stride)]


def pool_log_probabilities(
    window_log_probs: Sequence[Sequence[float]], pooling: str, calibration: DocumentCalibration | None = None
) -> list[float]:
    """One text's class log-probabilities from its windows' (for two classes: pooled log-odds), by
    the service's own rule (service/engine/preprocessing.py: `mean`, `max`, and the optional
    document calibration), renormalised."""
    return pool_log_probs(np.array([list(row) for row in window_log_probs]), pooling, calibration).tolist()
