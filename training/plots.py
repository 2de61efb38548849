"""The loss-curve PNG of a run: training loss per step beside the periodic evaluation metric."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on training machines; must precede pyplot
import matplotlib.pyplot as plt


def plot_run(
    history: Sequence[dict[str, Any]], evals: Sequence[dict[str, Any]], metric: str, title: str, path: Path
) -> Path:
    """Write a two-panel PNG (train loss, eval metric against step) and return its path."""
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axis.plot([row["step"] for row in history], [row["loss"] for row in history], lw=1)
    loss_axis.set(xlabel="step", ylabel="training loss", title="training loss")
    loss_axis.grid(alpha=0.3)
    if evals:
        metric_axis.plot([row["step"] for row in evals], [row[metric] for row in evals], marker="o", lw=1)
    metric_axis.set(xlabel="step", ylabel=metric, title=f"periodic eval: {metric}")
    metric_axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
