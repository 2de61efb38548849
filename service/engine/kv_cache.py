"""Slots over preallocated model state: the Transformer's in-place KV cache and RNN state rows.

Design (measured, see bench/engine and DESIGN.md): one buffer per layer `[max_slots, kv_heads,
max_len, head_dim]` is bound as both past and present, so the graph writes new keys and values in
place and no step ever copies the cache. A decode step must bind a contiguous range of rows
[0, highest used slot]. Holes left by finished requests are handled in two ways:
- the allocator hands out the lowest free slot, so waiting requests refill holes first;
- when nobody waits, the scheduler compacts: the highest row moves into the lowest hole (a copy of
  ONE slot's K/V, about 0.03 ms for shakespeare-gpt's 6 MB slot), so holes do not linger.
Any hole still present runs as a one-token dummy row. Measured on shakespeare-gpt (CPU, context 256,
bench/results/engine.md): 8 active rows step in 1.11 ms packed vs 1.23 ms spread over 16 rows, and
moving one slot costs 0.17 ms once, so compaction pays for itself within two steps of a hole.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from service.engine.row_copy import StateSlots
from service.engine.runtime import DeviceBuffer


class SlotAllocator:
    """Hands out slot indices lowest-first, so active rows stay packed at the bottom of the buffers."""

    def __init__(self, max_slots: int) -> None:
        if max_slots < 1:
            raise ValueError("max_slots: must be >= 1")
        self.max_slots = max_slots
        self._free = list(range(max_slots))
        heapq.heapify(self._free)
        self._used: set[int] = set()

    @property
    def used(self) -> int:
        return len(self._used)

    @property
    def free(self) -> int:
        return len(self._free)

    def allocate(self) -> int:
        """The lowest free slot; raises when none is free (the scheduler checks `free` first)."""
        if not self._free:
            raise RuntimeError("no free slot")
        slot = heapq.heappop(self._free)
        self._used.add(slot)
        return slot

    def release(self, slot: int) -> None:
        if slot not in self._used:
            raise ValueError(f"slot {slot} is not in use")
        self._used.remove(slot)
        heapq.heappush(self._free, slot)

    def compaction_move(self) -> tuple[int, int] | None:
        """(highest used slot, lowest free slot below it) when there is a hole to fill, else None.

        The move is recorded here: the destination becomes used and the source free.
        """
        if not self._used or not self._free or self._free[0] > max(self._used):
            return None
        src = max(self._used)
        dst = heapq.heappop(self._free)
        self._used.remove(src)
        self._used.add(dst)
        heapq.heappush(self._free, src)
        return src, dst


@dataclass(frozen=True)
class KVCacheSpec:
    """Shape of a GroupQueryAttention cache as the manifest's `onnx.kv_cache` describes it."""

    num_layers: int
    kv_heads: int
    head_dim: int
    max_len: int
    dtype: str = "float32"  # a GPU variant of a model may hold its cache in float16

    @property
    def bytes_per_slot(self) -> int:
        """Keys and values of every layer for one slot: what each slot costs."""
        return (
            2 * self.num_layers * self.kv_heads * self.max_len * self.head_dim * np.dtype(self.dtype).itemsize
        )


class KVCache:
    """Per-layer key and value buffers plus each slot's cached length (the only per-row state GQA needs)."""

    def __init__(self, spec: KVCacheSpec, max_slots: int, device: str) -> None:
        self.spec = spec
        self.max_slots = max_slots
        shape = (max_slots, spec.kv_heads, spec.max_len, spec.head_dim)
        dtype = np.dtype(spec.dtype)
        self.keys = [DeviceBuffer(shape, dtype, device) for _ in range(spec.num_layers)]
        self.values = [DeviceBuffer(shape, dtype, device) for _ in range(spec.num_layers)]
        # Tokens cached per slot. A free slot has length 0; its stale K/V is never attended to.
        self.lengths = np.zeros(max_slots, dtype=np.int64)

    def reset(self, slot: int) -> None:
        """Forget a slot's tokens; the memory is reused as is (stale K/V is harmless)."""
        self.lengths[slot] = 0


class RecurrentState:
    """`[layers, max_slots, hidden]` h (and c for LSTM) state rows on the session's device; a zero row
    starts a sequence.

    The state is small (kilobytes per slot), so a step gathers the active rows, runs them, and
    scatters the new state back: only active slots are computed, with no dummy rows. Gather and
    scatter run on the buffers' device (row_copy.StateSlots), so on CUDA the state never crosses to
    the host, and on the CPU the same code moves host memory.
    """

    def __init__(
        self,
        num_layers: int,
        hidden_size: int,
        max_slots: int,
        has_cell: bool,
        dtype: np.dtype | str = "float32",
        device: str = "cpu",
    ) -> None:
        shape = (num_layers, max_slots, hidden_size)
        self.h = DeviceBuffer(shape, dtype, device, zeroed=True)
        self.c = DeviceBuffer(shape, dtype, device, zeroed=True) if has_cell else None
        self.slots = StateSlots([self.h, *([self.c] if self.c is not None else [])])
        self.lengths = np.zeros(max_slots, dtype=np.int64)

    def copy(self, src: int, dst: int) -> None:
        self.slots.copy(src, dst)
        self.lengths[dst] = self.lengths[src]

    def reset(self, slot: int) -> None:
        self.slots.zero(np.array([slot], dtype=np.int64))
        self.lengths[slot] = 0
