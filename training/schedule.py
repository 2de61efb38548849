"""Learning-rate schedule (linear warmup, cosine decay to a floor) and the step horizon it decays over.

A wall-clock budget is met by scheduling on steps and choosing the number of steps from the measured
pace: after every step the horizon becomes `steps done + seconds left / seconds per step so far`
(capped by max_steps). Evaluations count in the pace, so they are paid for. The cosine therefore ends
at the budget, warmup stays a fixed number of steps, and a run without a time budget has a fixed
horizon and is exactly reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def lr_at(step: int, total_steps: int, max_lr: float, min_lr: float, warmup_steps: int) -> float:
    """LR for 0-based `step`: (step+1)/warmup of max_lr, then cosine from max_lr to min_lr at total_steps."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class StepBudget:
    """Stops a run at max_steps or max_seconds, whichever comes first, and sizes the schedule to it."""

    max_steps: int
    max_seconds: float = 0.0  # 0 means no time budget

    def horizon(self, steps_done: int, elapsed: float) -> int:
        """Total steps the run will reach, given the pace so far (a guess of max_steps before any step)."""
        if self.max_seconds <= 0 or steps_done == 0 or elapsed <= 0:
            return self.max_steps
        seconds_per_step = elapsed / steps_done
        expected = steps_done + int(max(0.0, self.max_seconds - elapsed) / seconds_per_step)
        return max(steps_done, min(self.max_steps, expected))

    def finished(self, steps_done: int, elapsed: float) -> bool:
        """True once either limit is reached."""
        if steps_done >= self.max_steps:
            return True
        return self.max_seconds > 0 and elapsed >= self.max_seconds
