"""Evaluation metrics: validation nats per character for LMs, accuracy for classifiers.

Nats per character = total cross-entropy (nats) of the validation token stream divided by the number
of characters of the validation text, so BPE and char models are comparable. The first token is only
context (LMs are trained with no BOS, so nothing predicts it); every later token is scored once.

Transformers are scored in non-overlapping windows of `context_length` input tokens, so the first
prediction of each window sees a single token of context and the last sees `context_length`. This is
the cheap, standard figure (nanoGPT's val loss); it slightly overstates the loss compared with
sliding windows, which would cost `context_length / stride` times more. RNNs carry their state
through the whole stream, so every token sees all the text before it.

Under data parallelism a rank scores every `world_size`-th batch (`part = (rank, world_size)`), built
exactly as a single process builds it, and the ranks add up their sums: the figure is the
single-process one up to the order of a few float64 additions. An RNN stream cannot be split.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

RNN_EVAL_CHUNK = 1024


Part = tuple[int, int]  # (which, of how many): this rank computes batches `which`, `which + of`, ...
WHOLE: Part = (0, 1)


def module_device(model: nn.Module) -> torch.device:
    """Where the model's weights live (the CPU for a model without any): its inputs go there."""
    first = next(model.parameters(), None)
    return torch.device("cpu") if first is None else first.device


def _window_nats(model: nn.Module, window: torch.Tensor) -> float:
    window = window.to(module_device(model))
    logits = model(window[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1).float(), window[:, 1:].flatten(), reduction="sum").item()


@torch.no_grad()
def transformer_stream_nats(
    model: nn.Module, tokens: torch.Tensor, context_length: int, batch_size: int = 32, part: Part = WHOLE
) -> tuple[float, int]:
    """(total nats of this part's batches, predicted tokens of the whole stream), non-overlapping windows."""
    model.eval()
    targets_total = tokens.numel() - 1
    full_windows = targets_total // context_length
    starts = [index * context_length for index in range(full_windows)]
    batches = [starts[first : first + batch_size] for first in range(0, len(starts), batch_size)]
    tail_start = full_windows * context_length
    has_tail = tail_start < targets_total
    which, of = part
    nats = 0.0
    for number in range(which, len(batches) + has_tail, of):
        if number == len(batches):
            nats += _window_nats(model, tokens[tail_start:].unsqueeze(0))
            continue
        index = torch.tensor(batches[number]).unsqueeze(1) + torch.arange(context_length + 1)
        nats += _window_nats(model, tokens[index])
    return nats, targets_total


@torch.no_grad()
def rnn_stream_nats(model: nn.Module, tokens: torch.Tensor, chunk: int = RNN_EVAL_CHUNK) -> tuple[float, int]:
    """(total nats, predicted tokens) of a 1-D token stream run through in one lane with carried state."""
    model.eval()
    state = None
    nats = 0.0
    for first in range(0, tokens.numel() - 1, chunk):
        window = tokens[first : first + chunk + 1].unsqueeze(0).to(module_device(model))
        logits, state = model(window[:, :-1], state)
        nats += F.cross_entropy(logits.flatten(0, 1).float(), window[:, 1:].flatten(), reduction="sum").item()
    return nats, tokens.numel() - 1


def nats_per_char(total_nats: float, num_chars: int) -> float:
    """Total cross-entropy over the text divided by its character count."""
    if num_chars <= 0:
        raise ValueError("cannot score an empty text")
    return total_nats / num_chars


@torch.no_grad()
def classifier_sums(
    model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], part: Part = WHOLE
) -> tuple[int, float, int]:
    """(correct, summed cross-entropy, examples) over this part's (ids, attention mask, labels) batches."""
    model.eval()
    device = module_device(model)
    correct, loss, count = 0, 0.0, 0
    for input_ids, attention_mask, labels in batches[part[0] :: part[1]]:
        output = model(input_ids.to(device), attention_mask.to(device))
        logits = output[0] if isinstance(output, tuple) else output
        labels = labels.to(device)
        correct += int((logits.argmax(dim=-1) == labels).sum())
        loss += F.cross_entropy(logits.float(), labels, reduction="sum").item()
        count += labels.numel()
    return correct, loss, count
