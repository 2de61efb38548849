"""The shared workload: seeded prompts of a fixed length, the same for every system measured."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Workload:
    prompt_tokens: int
    new_tokens: int
    vocab_size: int

    def prompts(self, batch: int, seed: int = 0) -> list[list[int]]:
        """Random ordinary token ids (ids 0-3 are special): every system gets identical inputs."""
        rng = np.random.default_rng(seed)
        return rng.integers(4, self.vocab_size, size=(batch, self.prompt_tokens)).tolist()


def best_of(repeats: int, fn: Callable[[], float]) -> float:
    """The fastest of `repeats` timed runs: the CPU is shared, and the best run has the least noise."""
    return min(fn() for _ in range(repeats))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
