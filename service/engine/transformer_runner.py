"""Drives a GroupQueryAttention decoder over the in-place KV cache with IO binding.

Each layer's buffer is bound as both `past_key_values.{i}.*` and `present.{i}.*` at the same
address, so the graph writes new K/V in place. Every decode input and output lives in a buffer
that persists, bound by pointer: the binding changes only when the high-water row or the mask's
width bucket changes, and a step only writes the inputs' contents. Logits are the only thing copied
to the host.

The attention mask's width tells GroupQueryAttention the total sequence length; each row's own
length comes from its count of ones. A mask wider than the longest row (zeros on the right) gives
the same logits, so the width grows in buckets of `MASK_WIDTH_STEP` and is rebound once a bucket,
not every step (tests/engine/test_generation.py holds the engine to torch's tokens).

The same code runs on CUDA: the KV buffers are then OrtValues in device memory (DeviceBuffer), bound
in place by pointer exactly as on the CPU; the small per-step inputs are bound in host memory and
ORT copies them in, and the logits output is bound in host memory, so ORT copies it out once per
run. A float16 graph's logits are widened to float32 here: sampling stays on the host in float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.engine.errors import ManifestError
from service.engine.kv_cache import KVCache, KVCacheSpec
from service.engine.row_copy import RowCopier
from service.engine.runtime import ModelSession

MASK_WIDTH_STEP = 32  # decode mask widths are multiples of this (see the module docstring)


class TransformerRunner:
    """Prefill and decode over slot rows of one preallocated KV cache."""

    def __init__(
        self, session: ModelSession, spec: KVCacheSpec, max_slots: int, vocab_size: int, pad_id: int = 0
    ) -> None:
        self.session = session
        self.max_slots = max_slots
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.provider = session.provider
        self.cache = KVCache(spec, max_slots, session.device)
        self._copier = RowCopier(np.dtype(spec.dtype), 4, session.device)
        self.packs_rows = True  # decode binds rows [0, high): the scheduler compacts holes
        self._past = [
            (f"past_key_values.{i}.key", f"past_key_values.{i}.value") for i in range(spec.num_layers)
        ]
        self._present = [(f"present.{i}.key", f"present.{i}.value") for i in range(spec.num_layers)]
        needed_in = {"input_ids", "attention_mask", *(n for pair in self._past for n in pair)}
        needed_out = {"logits", *(n for pair in self._present for n in pair)}
        missing = (needed_in - set(session.input_names)) | (needed_out - set(session.output_names))
        if missing:
            raise ManifestError(
                f"graph lacks inputs/outputs {sorted(missing)} (see docs/artifact-contract.md)"
            )
        self._has_position_ids = "position_ids" in session.input_names
        self._logits_dtype = session.output_dtype("logits")
        self._logits = np.zeros((max_slots, 1, vocab_size), dtype=self._logits_dtype)
        self._step_logits = self._logits[:, 0]  # a [max_slots, vocab] view
        self._rows_logits = np.zeros((max_slots, vocab_size), dtype=np.float32)  # what decode returns
        self._ids = np.zeros((max_slots, 1), dtype=np.int64)  # decode inputs, reused every step
        self._ids_flat = self._ids.reshape(max_slots)  # the same memory, one id per row
        self._mask = np.zeros(max_slots * spec.max_len, dtype=np.int64)
        self._positions = np.arange(spec.max_len, dtype=np.int64)[None, :]
        self._decode_binding = session.io_binding()
        self._decode_rows = 0  # rows the decode binding's KV and logits currently cover
        self._mask_shape = (0, 0)  # (rows, width) of the attention mask the decode binding holds

    @property
    def max_len(self) -> int:
        return self.cache.spec.max_len

    def length(self, row: int) -> int:
        return int(self.cache.lengths[row])

    def reset(self, row: int) -> None:
        self.cache.reset(row)

    def copy_row(self, src: int, dst: int) -> None:
        """Copy one slot's keys, values and length to another slot, on the cache's device."""
        for buffer in (*self.cache.keys, *self.cache.values):
            self._copier.copy(buffer, src, dst)
        self.cache.lengths[dst] = self.cache.lengths[src]

    def move_row(self, src: int, dst: int) -> None:
        """Compaction: the row moves down into a hole."""
        self.copy_row(src, dst)
        self.reset(src)

    def _bind_cache(self, binding: object, row0: int, rows: int) -> None:
        for layer, ((pk, pv), (ok, ov)) in enumerate(zip(self._past, self._present, strict=True)):
            key, value = self.cache.keys[layer], self.cache.values[layer]
            key.bind(binding, pk, row0, rows, as_output=False)
            key.bind(binding, ok, row0, rows, as_output=True)
            value.bind(binding, pv, row0, rows, as_output=False)
            value.bind(binding, ov, row0, rows, as_output=True)

    def decode(self, rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """One token for each of `rows`; holes below the highest row run as one-token dummy rows.

        A dummy row's mask counts its cached tokens plus one, so it writes at its own next free
        position: for a free row that is position 0, for a row in the middle of a chunked prefill it
        is the position its next chunk overwrites. Either way no cached token is disturbed.
        """
        rows = np.asarray(rows, dtype=np.int64)
        high = max(rows.tolist()) + 1  # a list's max: a numpy reduction costs more at a few rows
        lengths = self.cache.lengths[:high]
        longest = int(lengths.max()) + 1  # dummy rows never exceed a live row: a live row's count
        if longest > self.max_len:
            raise RuntimeError("a row is at the end of its KV buffer; the scheduler must stop it first")
        width = min(-(-longest // MASK_WIDTH_STEP) * MASK_WIDTH_STEP, self.max_len)
        packed = high == len(rows)  # rows are distinct: then they are exactly [0, high), no hole
        ids = self._ids_flat
        if not packed:
            ids[:high].fill(self.pad_id)
        ids.put(rows, tokens)
        mask = self._mask[: high * width].reshape(high, width)  # contiguous [high, width] in the buffer
        # Each row (dummy rows too) counts its cached tokens plus the one it runs now.
        np.less_equal(self._positions[:, :width], lengths[:, None], out=mask, casting="unsafe")
        binding = self._decode_binding
        if high != self._decode_rows:
            # Everything but the mask lives in buffers that persist: bound by pointer once per height.
            self._bind_cache(binding, 0, high)
            binding.bind_output(
                "logits", "cpu", 0, self._logits_dtype, [high, 1, self.vocab_size], self._logits.ctypes.data
            )
            binding.bind_input("input_ids", "cpu", 0, np.int64, [high, 1], self._ids.ctypes.data)
            if self._has_position_ids:  # each row's next position is its cached length
                binding.bind_input(
                    "position_ids", "cpu", 0, np.int64, [high, 1], self.cache.lengths.ctypes.data
                )
            self._decode_rows = high
        if self._mask_shape != (high, width):
            binding.bind_input("attention_mask", "cpu", 0, np.int64, [high, width], self._mask.ctypes.data)
            self._mask_shape = (high, width)
        self.session.run_binding(binding)
        if packed:
            lengths += 1  # a view of [0, high): cheaper than indexing by rows
        else:
            self.cache.lengths[rows] += 1
        if self._logits_dtype != np.float32:  # a float16 graph: widened for host sampling (a copy)
            return self._step_logits[rows].astype(np.float32)
        # The rows' logits in their order, into a buffer of its own (no allocation per step); valid
        # until the next call, which overwrites it. The method, not np.take (a Python wrapper), and
        # mode "clip" (the rows are in range), since numpy buffers `out` in its default mode.
        return self._step_logits.take(rows, 0, self._rows_logits[: len(rows)], "clip")

    def prefill(
        self, rows: Sequence[int], chunks: Sequence[np.ndarray], all_logits: Sequence[bool]
    ) -> list[np.ndarray]:
        """Fresh rows with adjacent indices share one right-padded call; a row with cached tokens
        runs alone (GQA accepts several new tokens per row with past context only at batch 1).

        All or nothing: when a group's run raises, the groups already run get their lengths back,
        so the scheduler may re-run each row on its own. The K/V they wrote lie past those lengths,
        where the re-run writes again (GQA writes a row's new tokens at its cached length).
        """
        before = self.cache.lengths[np.asarray(rows, dtype=np.int64)].copy()
        out: list[np.ndarray | None] = [None] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: rows[i])
        group: list[int] = []
        try:
            for i in order:
                fresh = self.cache.lengths[rows[i]] == 0
                if (
                    group
                    and fresh
                    and rows[i] == rows[group[-1]] + 1
                    and self.cache.lengths[rows[group[0]]] == 0
                ):
                    group.append(i)
                    continue
                if group:
                    self._prefill_group(group, rows, chunks, all_logits, out)
                group = [i]
            if group:
                self._prefill_group(group, rows, chunks, all_logits, out)
        except BaseException:
            self.cache.lengths[np.asarray(rows, dtype=np.int64)] = before
            raise
        return [o for o in out if o is not None]

    def _prefill_group(
        self,
        group: list[int],
        rows: Sequence[int],
        chunks: Sequence[np.ndarray],
        all_logits: Sequence[bool],
        out: list[np.ndarray | None],
    ) -> None:
        row0 = int(rows[group[0]])
        lens = np.array([len(chunks[i]) for i in group], dtype=np.int64)
        starts = self.cache.lengths[row0 : row0 + len(group)].copy()
        counts = starts + lens
        if int(counts.max()) > self.max_len:
            raise RuntimeError("prefill past the end of the KV buffer")
        seq = int(lens.max())
        ids = np.full((len(group), seq), self.pad_id, dtype=np.int64)
        for j, i in enumerate(group):
            ids[j, : lens[j]] = chunks[i]
        mask = (np.arange(int(counts.max()))[None, :] < counts[:, None]).astype(np.int64)
        logits = np.empty((len(group), seq, self.vocab_size), dtype=self._logits_dtype)
        binding = self.session.io_binding()
        binding.bind_output("logits", "cpu", 0, self._logits_dtype, list(logits.shape), logits.ctypes.data)
        self._bind_cache(binding, row0, len(group))
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", mask)
        if self._has_position_ids:
            positions = np.minimum(starts[:, None] + np.arange(seq)[None, :], self.max_len - 1)
            binding.bind_cpu_input("position_ids", positions.astype(np.int64))
        self.session.run_binding(binding)
        self.cache.lengths[row0 : row0 + len(group)] = counts
        for j, i in enumerate(group):
            n = int(lens[j])
            chosen = logits[j, :n] if all_logits[i] else logits[j, n - 1 : n]
            out[i] = chosen.astype(np.float32)  # a copy, float32 whatever the graph computes in

    def warmup(self, prefill_lengths: Sequence[int]) -> None:
        for length in prefill_lengths:
            length = max(1, min(int(length), self.max_len - 1))
            self.prefill([0], [np.full(length, self.pad_id, dtype=np.int64)], [False])
            self.reset(0)
        batch = 1
        while True:
            rows = np.arange(min(batch, self.max_slots))
            self.decode(rows, np.full(len(rows), self.pad_id, dtype=np.int64))
            batch *= 2
            if len(rows) == self.max_slots:
                break
        for row in range(self.max_slots):
            self.reset(row)
