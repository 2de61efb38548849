"""What the one training loop needs from a task: batches and their loss, evaluation, resumable state.

The loop knows nothing about windows, TBPTT lanes or padding; a task object does. That is how a
language model and a classifier share every line of the optimisation, checkpoint and budget code.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn


class Task(Protocol):
    """A training objective over one data set."""

    metric: str  # the headline metric in metrics.json: "val_nats_per_char" or "dev_accuracy"
    higher_is_better: bool
    early_stopping: bool  # stop after `patience` evals without improvement (classifiers)

    def train_loss(self, model: nn.Module) -> torch.Tensor:
        """Draw the next training batch and return its scalar loss (graph attached)."""
        ...

    def evaluate(self, model: nn.Module, full: bool) -> dict[str, float]:
        """Metrics including `self.metric`; `full=False` may use a fixed subset to be quick."""
        ...

    def data_summary(self) -> dict[str, int]:
        """Sizes of the splits (tokens, characters, examples) for metrics.json."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Position in the data and any carried state (tensors allowed), for bit-identical resume."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def improved(task: Task, value: float, best: float | None) -> bool:
    """Whether `value` beats the best so far in the task's direction."""
    if best is None:
        return True
    return value > best if task.higher_is_better else value < best
