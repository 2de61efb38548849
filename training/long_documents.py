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
