"""The persistent decode batch: the samples that decode each step, with their inputs and sampling
parameters kept in arrays preallocated for every slot (vLLM's InputBatch idea).

A row's entries are written when its sample joins (its first token sampled) and overwritten when
it leaves (the rows after it move up), so the live rows stay `[0, size)` and a step reads views
of them. Nothing is rebuilt per step, and the counts of rows that need more than an argmax
(or carry a constraint) are kept too, so the common steps skip whole passes:
- every row plain greedy: one argmax, written straight into the next step's input tokens;
- no constrained row: no mask work at all.
"""

from __future__ import annotations

import numpy as np

from service.engine.masks import MaskBatch, MaskWorker
from service.engine.sampling import RowArrays, SampleOutput, SamplingRow, sample
from service.engine.sequence import Sequence


class DecodeBatch:
    """Rows `[0, size)`: `seqs[i]` decodes slot `rows[i]`, fed `tokens[i]` at the next step."""

    def __init__(self, max_slots: int) -> None:
        self.seqs: list[Sequence] = []
        self.sampling_rows: list[SamplingRow] = []  # seqs[i].row, kept beside for the general path
        self.slots = np.zeros(max_slots, dtype=np.int64)
        self.tokens = np.zeros(max_slots, dtype=np.int64)
        self.arrays = RowArrays.empty(max_slots)
        self._argmax = np.zeros(max_slots, dtype=np.int64)
        self._none: list[None] = [None] * max_slots
        self._not_plain_greedy = 0  # rows that need more than the argmax of their logits
        self._constrained = 0  # rows with a structured-output matcher

    def __len__(self) -> int:
        return len(self.seqs)

    def __bool__(self) -> bool:
        return bool(self.seqs)

    @property
    def constrained(self) -> bool:
        return self._constrained > 0

    @property
    def all_plain_greedy(self) -> bool:
        return self._not_plain_greedy == 0

    def add(self, seq: Sequence, token: int) -> None:
        """A sample joins: it decodes from the next step on, fed `token` first."""
        i = len(self.seqs)
        seq.batch_index = i
        self.seqs.append(seq)
        self.sampling_rows.append(seq.row)
        self.slots[i] = seq.slot
        self.tokens[i] = token
        self.arrays.set(i, seq.row.params)
        self._not_plain_greedy += not seq.row.plain_greedy
        self._constrained += seq.matcher is not None

    def remove(self, seq: Sequence) -> None:
        """A sample leaves; the rows after it move up one place.

        Order is kept (not the last row moved into the hole) because a step that lost rows to a
        failed run matches its surviving logits and masks to the rows by order.
        """
        i = seq.batch_index
        if i is None:
            return
        size = len(self.seqs)
        self._not_plain_greedy -= not seq.row.plain_greedy
        self._constrained -= seq.matcher is not None
        del self.seqs[i]
        del self.sampling_rows[i]
        for array in (self.slots, self.tokens):
            array[i : size - 1] = array[i + 1 : size]
        self.arrays.shift_up(i, size)
        for j in range(i, size - 1):
            self.seqs[j].batch_index = j
        seq.batch_index = None

    def move(self, seq: Sequence, slot: int) -> None:
        """A sample's state moved to another slot (compaction)."""
        if seq.batch_index is not None:
            self.slots[seq.batch_index] = slot

    def sample(self, logits: np.ndarray, allowed: tuple[np.ndarray, np.ndarray] | None) -> SampleOutput:
        """One token per row from the step's logits `[size, vocab]`; the tokens are also written into
        `tokens`, the next step's input (rows that end are removed after this)."""
        n = len(self.seqs)
        if allowed is None and self._not_plain_greedy == 0:
            tokens = self._argmax[:n]
            np.argmax(logits, axis=1, out=tokens)
            self.tokens[:n] = tokens
            none = self._none[:n]
            return SampleOutput(tokens, none, none)
        out = sample(logits, self.sampling_rows, allowed, self.arrays.head(n))
        self.tokens[:n] = out.tokens
        return out

    def start_masks(self, worker: MaskWorker) -> MaskBatch | None:
        """The rows' next masks (computed while the model runs), or None with no constrained row."""
        if not self._constrained:
            return None
        return worker.start([seq.matcher for seq in self.seqs])
