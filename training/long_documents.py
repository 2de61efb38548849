"""How a classifier fits a text longer than its input budget: keep the head, the tail, or both.

Full movie reviews (polarity-v2) run to 700-1000 BPE tokens, and a reviewer's verdict tends to sit in
the closing lines, with the set-up in the opening ones. `head_tail` keeps both ends and drops the
middle (mostly plot summary): Sun et al. (2019, "How to Fine-Tune BERT for Text Classification?")
found head+tail the best truncation on IMDb, beating head-only, tail-only and chunked averaging.
We keep their proportions: a quarter of the budget for the head, the rest for the tail.
"""

from __future__ import annotations

from collections.abc import Sequence

TRUNCATIONS = ("head", "tail", "head_tail")
HEAD_SHARE = 0.25  # head_tail: fraction of the budget given to the opening tokens (128 of 512 in Sun et al.)


def truncate(ids: Sequence[int], room: int, policy: str) -> list[int]:
    """At most `room` ids of `ids`, chosen by `policy`; a text that fits comes back whole."""
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


LONG_DOCUMENT_MODES = ("truncate", "windows")
POOLINGS = ("mean", "max")


def window_starts(length: int, room: int, stride: int) -> list[int]:
    """Start offsets of the windows that cover `length` ids, `room` ids each, `stride` apart.

    The last window is aligned to the end of the text, so every window is full and the closing
    lines (where reviewers give their verdict) are always read whole. A text that fits is one window.
    """
    if room <= 0 or stride <= 0:
        raise ValueError(f"window room and stride must be positive, got {room} and {stride}")
    if length <= room:
        return [0]
    starts = list(range(0, length - room, stride))
    return [*starts, length - room]


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
