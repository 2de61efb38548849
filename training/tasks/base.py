"""What the one training loop needs from a task: batches and their loss, evaluation, resumable state.

The loop knows nothing about windows, TBPTT lanes or padding; a task object does. That is how a
language model and a classifier share every line of the optimisation, checkpoint and budget code.

A task draws the recipe's whole (global) batch identically on every rank and hands the loop only
this rank's micro-batches of it (training/distributed.py); each micro-batch's loss is its share of
the global batch's mean loss, so the shares of all ranks and micro-batches add up to that mean.
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
    every_parameter_trained: bool  # False when the loss leaves some parameter without a gradient

    def next_parts(self) -> list[Any]:
        """Draw the next global batch; return this rank's micro-batches of it."""
        ...

    def part_loss(self, model: nn.Module, part: Any) -> torch.Tensor:
        """The micro-batch's share of the global batch's mean loss (graph attached)."""
        ...

    def evaluate(self, model: nn.Module, full: bool) -> dict[str, float]:
        """Metrics including `self.metric`, the same on every rank; `full=False` may use a subset.

        Under data parallelism every rank must call it (the ranks add up their parts)."""
        ...

    def data_summary(self) -> dict[str, int]:
        """Sizes of the splits (tokens, characters, examples) for metrics.json."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Position in the data and any carried state, independent of the number of ranks, for
        bit-identical resume with as many ranks or any other number. Every rank must call it."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def improved(task: Task, value: float, best: float | None) -> bool:
    """Whether `value` beats the best so far in the task's direction."""
    if best is None:
        return True
    return value > best if task.higher_is_better else value < best
