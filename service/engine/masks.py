"""Allowed-token masks of a step's constrained rows, computed on a worker thread while the model runs.

llguidance and onnxruntime both release the GIL, so the masks of step t+1 (each matcher has taken
the token of step t) are computed during step t+1's model run instead of after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import llguidance
import llguidance.numpy as llnp
import numpy as np


def unpack_bitmask(bitmask: np.ndarray, vocab: int) -> np.ndarray:
    """llguidance's int32 bitmask `[rows, ceil(vocab / 32)]` (bit i of word j: token 32j + i) as bools."""
    bits = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little")
    return bits[:, :vocab].astype(bool)


class MaskBatch:
    """The allowed-token masks of one step's constrained rows, computed on the mask thread."""

    def __init__(
        self,
        rows: np.ndarray,
        future: Future[np.ndarray],
        text_tokens: np.ndarray,
        picked: np.ndarray | None = None,
    ) -> None:
        self.rows = rows  # indices into the step's rows
        self._future = future
        self._text_tokens = text_tokens
        self._picked = picked  # which of the computed masks these rows are (None: all, in order)

    def wait(self) -> None:
        self._future.result()

    def allowed(self) -> np.ndarray:
        """Bool `[len(rows), vocab]`: True where the token keeps the output on the grammar."""
        bitmask = self._future.result()
        if self._picked is not None:
            bitmask = bitmask[self._picked]
        return unpack_bitmask(bitmask, len(self._text_tokens)) & self._text_tokens

    def without(self, dropped: Sequence[int]) -> MaskBatch | None:
        """The masks of the step's other rows, renumbered, once the rows at `dropped` left the step
        (their model run failed); None when no constrained row is left."""
        gone = np.sort(np.asarray(dropped, dtype=np.int64))
        keep = np.flatnonzero(~np.isin(self.rows, gone))
        if not len(keep):
            return None
        picked = keep if self._picked is None else self._picked[keep]
        rows = self.rows[keep] - np.searchsorted(gone, self.rows[keep])
        return MaskBatch(rows, self._future, self._text_tokens, picked)


class MaskWorker:
    """One thread that computes masks while the scheduler thread runs the model: llguidance and ORT
    both release the GIL, so the two overlap. llguidance spreads a batch over its own threads."""

    def __init__(self, text_tokens: np.ndarray, name: str) -> None:
        self._text_tokens = text_tokens  # special tokens other than eos are never allowed
        self._words = (len(text_tokens) + 31) // 32
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"masks-{name}")
        self._executor: llguidance.LLExecutor | None = None

    def start(self, matchers: Sequence[llguidance.LLMatcher | None]) -> MaskBatch | None:
        """Begin the masks of the rows that have a matcher; None when no row is constrained."""
        rows = [i for i, m in enumerate(matchers) if m is not None]
        if not rows:
            return None
        pairs = [(matchers[i], j) for j, i in enumerate(rows)]
        future = self._pool.submit(self._fill, pairs)
        return MaskBatch(np.array(rows, dtype=np.int64), future, self._text_tokens)

    def _fill(self, pairs: list[tuple[llguidance.LLMatcher, int]]) -> np.ndarray:
        if self._executor is None:
            self._executor = llguidance.LLExecutor()
        bitmask = np.empty((len(pairs), self._words), dtype=np.int32)
        llnp.fill_next_token_bitmask_par(self._executor, pairs, bitmask)
        return bitmask

    def close(self) -> None:
        self._pool.shutdown(wait=True)
