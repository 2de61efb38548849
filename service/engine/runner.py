"""The interface the scheduler drives: a model that prefills rows and decodes one token per row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from service.engine.runtime import ModelSession


class ModelRunner(Protocol):
    """A generation model bound to `max_slots` rows of state; the scheduler owns which row serves whom."""

    max_slots: int
    vocab_size: int
    provider: str
    session: ModelSession
    packs_rows: bool  # True when decode runs rows [0, high) and holes should be compacted

    @property
    def max_len(self) -> int | None:
        """Most tokens a row can hold (the KV buffer length), or None when unbounded (RNN state)."""
        ...

    def prefill(
        self, rows: Sequence[int], chunks: Sequence[np.ndarray], all_logits: Sequence[bool]
    ) -> list[np.ndarray]:
        """Append each chunk of tokens to its row's state; return per row logits `[len, vocab]`
        (all positions when asked, else only the last position `[1, vocab]`)."""
        ...

    def decode(self, rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row and return the next-token logits `[len(rows), vocab]`; the array
        may be the runner's own buffer, valid until its next call (copy what must outlive it)."""
        ...

    def reset(self, row: int) -> None:
        """Forget a row's tokens so a new request can use it."""
        ...

    def copy_row(self, src: int, dst: int) -> None:
        """Copy a row's state into another row (n samples share one prefill)."""
        ...

    def move_row(self, src: int, dst: int) -> None:
        """Move a row's state to a free row (compaction)."""
        ...

    def length(self, row: int) -> int:
        """Tokens currently held by a row."""
        ...

    def warmup(self, prefill_lengths: Sequence[int]) -> None:
        """Run the shapes requests will use (prefill buckets, decode batch sizes), then reset every row."""
        ...
