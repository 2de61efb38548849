"""Drives an RNN/GRU/LSTM language model over `[layers, max_slots, hidden]` state slots.

A step gathers the active rows' state, runs only those rows, and scatters the new state back. The
state is kilobytes per slot, so the gather costs far less than dummy rows would (for an RNN every
row costs a full step of compute; there is no attention to make short rows cheap).

The state lives on the session's device and is bound there (IO binding): gathered rows go in as
device OrtValues, the new state comes out on the device and is scattered back on the device. Only
the token ids go in from the host and only the logits come back to it.
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
        self._state_in = ["state_h", *(["state_c"] if self._lstm else [])]
        self._state_out = [f"{name}_out" for name in self._state_in]
        dtype = session.input_dtype("state_h")
        self.state = RecurrentState(num_layers, hidden_size, max_slots, self._lstm, dtype, session.device)
        self._logits_dtype = session.output_dtype("logits")
        self._logits = np.zeros((max_slots, 1, vocab_size), dtype=self._logits_dtype)
        self._ids = np.zeros((max_slots, 1), dtype=np.int64)
        self._decode_binding = session.io_binding()
        self._decode_rows = 0

    def length(self, row: int) -> int:
        return int(self.state.lengths[row])

    def reset(self, row: int) -> None:
        self.state.reset(row)

    def copy_row(self, src: int, dst: int) -> None:
        self.state.copy(src, dst)

    def move_row(self, src: int, dst: int) -> None:
        self.copy_row(src, dst)
        self.reset(src)

    def _run(self, rows: np.ndarray, ids: np.ndarray, offset: int = 0) -> np.ndarray:
        """Run `rows` from the state scratch block at row `offset`; returns the logits (host, float32).

        The rows' new state lands in the `updated` scratch block at the same offset; the state slots
        are not touched until `_commit`."""
        slots = self.state.slots
        slots.gather(rows, offset)
        count = len(rows)
        logits = np.empty((count, ids.shape[1], self.vocab_size), dtype=self._logits_dtype)
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", ids)
        slots.bind_block(binding, self._state_in, slots.gathered, offset, count, as_output=False)
        slots.bind_block(binding, self._state_out, slots.updated, offset, count, as_output=True)
        binding.bind_output("logits", "cpu", 0, self._logits_dtype, list(logits.shape), logits.ctypes.data)
        self.session.run_binding(binding)
        return logits.astype(np.float32, copy=False)

    def _decode_run(self, rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """A decode step on a persistent binding, rebound only when the batch size changes."""
        count = len(rows)
        slots = self.state.slots
        slots.gather(rows, 0)
        self._ids[:count, 0] = tokens
        binding = self._decode_binding
        if self._decode_rows != count:
            binding.bind_input("input_ids", "cpu", 0, np.int64, [count, 1], self._ids.ctypes.data)
            slots.bind_block(binding, self._state_in, slots.gathered, 0, count, as_output=False)
            slots.bind_block(binding, self._state_out, slots.updated, 0, count, as_output=True)
            shape = [count, 1, self.vocab_size]
            binding.bind_output("logits", "cpu", 0, self._logits_dtype, shape, self._logits.ctypes.data)
            self._decode_rows = count
        self.session.run_binding(binding)
        return self._logits[:count, 0].astype(np.float32)  # a copy: the buffer is reused next step

    def _commit(self, rows: np.ndarray, offset: int, tokens: int) -> None:
        self.state.slots.scatter(rows, "updated", offset)
        self.state.lengths[rows] += tokens

    def decode(self, rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        logits = self._decode_run(rows, np.asarray(tokens, dtype=np.int64))
        self._commit(rows, 0, 1)
        return logits

    def prefill(
        self, rows: Sequence[int], chunks: Sequence[np.ndarray], all_logits: Sequence[bool]
    ) -> list[np.ndarray]:
        """All or nothing: every group runs before any state slot is written, so a run that raises
        leaves every row as it was and the scheduler may re-run each on its own."""
        out: list[np.ndarray | None] = [None] * len(rows)
        by_length: dict[int, list[int]] = defaultdict(list)
        for i, chunk in enumerate(chunks):
            by_length[len(chunk)].append(i)
        groups = []
        offset = 0  # each group's state waits in its own scratch block until every group ran
        for length, members in by_length.items():
            ids = np.stack([np.asarray(chunks[i], dtype=np.int64) for i in members])
            group_rows = np.array([rows[i] for i in members], dtype=np.int64)
            logits = self._run(group_rows, ids, offset)
            groups.append((group_rows, offset, length))
            offset += len(group_rows)
            for j, i in enumerate(members):
                out[i] = logits[j] if all_logits[i] else logits[j, length - 1 : length]
        for group_rows, group_offset, length in groups:
            self._commit(group_rows, group_offset, length)
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
