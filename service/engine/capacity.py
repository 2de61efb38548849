"""Defaults that fit the box: ORT threads from the cores this process may use, slots from the KV budget.

Why these rules (measured in bench/results/ceiling.md and docs/api.md's settings section):
- ORT's own default is one spinning thread per physical core. The event loop then competes with
  threads that busy-wait between decode steps, and the server spends about twice the CPU per token
  that the model needs. Leaving one core to the event loop (and not spinning) costs little
  throughput and frees the loop.
- The engine's throughput on this CPU keeps rising up to 64 rows per step, so the slot count is
  what the KV budget holds, capped per device: beyond the cap a step gets slower than the streams
  it adds are worth (CPU), or the budget, not the cap, binds first (GPU).
"""

from __future__ import annotations

import os
from pathlib import Path

# Upper bounds on automatic slots: CPU steps grow linearly past 64 rows; a GPU batches far more.
SLOT_CAP = {"cpu": 64, "cuda": 256}
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores() -> int:
    """Cores this process may run on: the affinity mask, bounded by a cgroup v2 CPU quota (a
    Kubernetes CPU limit), which `os.cpu_count()` ignores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = _CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def intra_op_threads(requested: int, provider: str, cores: int | None = None) -> int:
    """`requested` if set; else one ORT thread per usable core less the one the event loop needs.
    On CUDA the kernels run on the device and ORT's CPU threads only launch them: one is enough."""
    if requested > 0:
        return requested
    if provider == "cuda":
        return 1
    return max(1, (cores or usable_cores()) - 1)


def slot_count(requested: int | None, bytes_per_slot: int, budget_bytes: int, device: str) -> int:
    """`requested` if set; else as many slots as `budget_bytes` of state holds, at most the device's cap."""
    if requested is not None:
        return requested
    cap = SLOT_CAP.get(device, SLOT_CAP["cpu"])
    if bytes_per_slot <= 0:
        return cap
    return max(1, min(cap, budget_bytes // bytes_per_slot))
