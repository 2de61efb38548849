"""The comparison's rules, the same for every system: one untimed warm-up run per batch size, then
the best of the same number of timed runs; and when a run's table may replace the committed one.

Why a warm-up for everyone: a first run pays one-off costs (allocator growth, kernel selection, lazy
imports) that no steady-state server pays, and giving it to one system and not another skews the
ratio. Why best-of: the CPU is shared, and the fastest run carries the least noise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bench.engine.workload import Workload

log = logging.getLogger(__name__)

# One timed run of `batch` prompts; returns generated tokens per second.
Run = Callable[[Workload, int], float]

WARMUP_RUNS = 1
# Short runs (B=1 takes ~0.1 s) get more tries: a random stall costs them the most.
TRIES_FACTOR = {1: 4, 8: 2}
# What the committed table in bench/results was measured with.
FULL_BATCHES = (1, 8, 32)
FULL_WORKLOAD = (128, 256)  # prompt tokens, new tokens


def tries(repeats: int, batch: int) -> int:
    return repeats * TRIES_FACTOR.get(batch, 1)


def measure(systems: dict[str, Run], work: Workload, batches: list[int], repeats: int) -> dict[str, dict]:
    """{system: {batch: best tokens/s}}. At each batch size every system warms up, then the systems
    take turns run by run, so load drifting on the shared CPU hits them all alike."""
    best: dict[str, dict[str, float]] = {name: {} for name in systems}
    for batch in batches:
        for run in systems.values():
            for _ in range(WARMUP_RUNS):
                run(work, batch)
        for _ in range(tries(repeats, batch)):
            for name, run in systems.items():
                best[name][str(batch)] = max(best[name].get(str(batch), 0.0), run(work, batch))
        log.info("B=%d: %s", batch, {name: round(by[str(batch)]) for name, by in best.items()})
    return best


def unpublishable_reasons(
    quick: bool, skipped: dict[str, str], batches: list[int], work: Workload, default_model: bool
) -> list[str]:
    """Why this run must not replace bench/results/engine.{json,md}; empty when it may.

    The committed table is the headline comparison: a run that left a peer out, or measured a
    different workload, would silently drop or skew its rows.
    """
    reasons = [f"{name} not measured: {why}" for name, why in skipped.items()]
    if quick:
        reasons.append("quick mode (fewer runs)")
    if tuple(batches) != FULL_BATCHES:
        reasons.append(f"batch sizes {batches}, not {list(FULL_BATCHES)}")
    if (work.prompt_tokens, work.new_tokens) != FULL_WORKLOAD:
        reasons.append(f"workload {work.prompt_tokens}+{work.new_tokens} tokens, not 128+256")
    if not default_model:
        reasons.append("not the committed default model")
    return reasons
