"""AdamW with weight decay on weight matrices only, and the thread setting of a training process."""

from __future__ import annotations

import os

import torch
from torch import nn

from training.recipe import OptimConfig

THREADS_ENV = "SEQSERVE_TORCH_THREADS"


def no_decay_parameters(model: nn.Module) -> set[int]:
    """Ids of parameters that weight decay would only shrink towards zero: the one rule for every model.

    Vectors (biases, norm gains) and embedding tables are left alone; every other matrix is decayed.
    A head tied to an embedding is that embedding's tensor, so it is left alone too.
    """
    chosen = {id(param) for param in model.parameters() if param.ndim < 2}
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            chosen.update(id(param) for param in module.parameters(recurse=False))
    return chosen


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Two AdamW groups: decayed weights and everything else (each shared tensor listed once)."""
    skip = no_decay_parameters(model)
    params = [param for param in model.parameters() if param.requires_grad]
    return [
        {"params": [p for p in params if id(p) not in skip], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) in skip], "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the two groups; the LR is set by the schedule before every step."""
    return torch.optim.AdamW(
        parameter_groups(model, optim.weight_decay),
        lr=optim.lr,
        betas=(optim.betas[0], optim.betas[1]),
        eps=optim.eps,
    )


def configure_threads(threads: int = 0, processes_here: int = 1) -> int:
    """Set torch's intra-op threads: the recipe's value, else $SEQSERVE_TORCH_THREADS, else this
    machine's cores divided among the `processes_here` training processes (ranks) that share it."""
    cores = os.cpu_count() or 1
    count = threads or int(os.environ.get(THREADS_ENV, "0") or 0) or max(1, cores // max(1, processes_here))
    torch.set_num_threads(count)
    return count
