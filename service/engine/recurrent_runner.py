"""Drives an RNN/GRU/LSTM language model over `[layers, max_slots, hidden]` state slots.

A step gathers the active rows' state, runs only those rows, and scatters the new state back. The
state is kilobytes per slot, so the gather costs far less than dummy rows would (for an RNN every
row costs a full step of compute; there is no attention to make short rows cheap).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from service.engine.errors import ManifestError
from service.engine.kv_cache import RecurrentState
from service.engine.runtime import ModelSession


class RecurrentRunner:
    """Prefill (rows of equal chunk length share a call) and one-token decode steps over state slots."""

    max_len = None
    packs_rows = False  # a step gathers any set of rows: holes cost nothing

    def __init__(
        self,
        session: ModelSession,
        num_layers: int,
        hidden_size: int,
        cell: str,
        max_slots: int,
        vocab_size: int,
    ) -> None:
        self.session = session
        self.max_slots = max_slots
        self.vocab_size = vocab_size
        self.provider = session.provider
        self._lstm = cell == "lstm"
        needed_in = {"input_ids", "state_h", *(["state_c"] if self._lstm else [])}
        needed_out = {"logits", "state_h_out", *(["state_c_out"] if self._lstm else [])}
        missing = (needed_in - set(session.input_names)) | (needed_out - set(session.output_names))
        if missing:
            raise ManifestError(
                f"graph lacks inputs/outputs {sorted(missing)} (see docs/artifact-contract.md)"
            )
        self.state = RecurrentState(num_layers, hidden_size, max_slots, self._lstm)

    def length(self, row: int) -> int:
        return int(self.state.lengths[row])

    def reset(self, row: int) -> None:
        self.state.reset(row)

    def copy_row(self, src: int, dst: int) -> None:
        self.state.h[:, dst] = self.state.h[:, src]
        if self.state.c is not None:
            self.state.c[:, dst] = self.state.c[:, src]
        self.state.lengths[dst] = self.state.lengths[src]

    def move_row(self, src: int, dst: int) -> None:
        self.copy_row(src, dst)
        self.reset(src)

    def _run(self, rows: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits and the rows' new state; the state slots are not touched (see `_commit`)."""
        feeds = {"input_ids": ids, "state_h": self.state.h[:, rows]}  # fancy indexing: copies
        if self._lstm:
            feeds["state_c"] = self.state.c[:, rows]
        out = self.session.run(feeds)
        return out["logits"], out

    def _commit(self, rows: np.ndarray, out: dict[str, np.ndarray], tokens: int) -> None:
        self.state.h[:, rows] = out["state_h_out"]
        if self._lstm:
            self.state.c[:, rows] = out["state_c_out"]
        self.state.lengths[rows] += tokens

    def decode(self, rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        logits, out = self._run(rows, np.asarray(tokens, dtype=np.int64)[:, None])
        self._commit(rows, out, 1)
        return logits[:, 0]

    def prefill(
        self, rows: Sequence[int], chunks: Sequence[np.ndarray], all_logits: Sequence[bool]
    ) -> list[np.ndarray]:
        """All or nothing: every group runs before any state slot is written, so a run that raises
        leaves every row as it was and the scheduler may re-run each on its own."""
        out: list[np.ndarray | None] = [None] * len(rows)
        by_length: dict[int, list[int]] = defaultdict(list)
        for i, chunk in enumerate(chunks):
            by_length[len(chunk)].append(i)
        states = []
        for length, members in by_length.items():
            ids = np.stack([np.asarray(chunks[i], dtype=np.int64) for i in members])
            group_rows = np.array([rows[i] for i in members], dtype=np.int64)
            logits, state = self._run(group_rows, ids)
            states.append((group_rows, state, length))
            for j, i in enumerate(members):
                out[i] = logits[j] if all_logits[i] else logits[j, length - 1 : length]
        for group_rows, state, length in states:
            self._commit(group_rows, state, length)
        return [o for o in out if o is not None]

    def warmup(self, prefill_lengths: Sequence[int]) -> None:
        for length in prefill_lengths:
            self.prefill([0], [np.zeros(max(1, int(length)), dtype=np.int64)], [False])
        batch = 1
        while True:
            rows = np.arange(min(batch, self.max_slots))
            self.decode(rows, np.zeros(len(rows), dtype=np.int64))
            if len(rows) == self.max_slots:
                break
            batch *= 2
        for row in range(self.max_slots):
            self.reset(row)
