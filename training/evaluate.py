"""Evaluation metrics: validation nats per character for LMs, accuracy for classifiers.

Nats per character = total cross-entropy (nats) of the validation token stream divided by the number
of characters of the validation text, so BPE and char models are comparable. The first token is only
context (LMs are trained with no BOS, so nothing predicts it); every later token is scored once.

Transformers are scored in non-overlapping windows of `context_length` input tokens, so the first
prediction of each window sees a single token of context and the last sees `context_length`. This is
the cheap, standard figure (nanoGPT's val loss); it slightly overstates the loss compared with
sliding windows, which would cost `context_length / stride` times more. RNNs carry their state
through the whole stream, so every token sees all the text before it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

RNN_EVAL_CHUNK = 1024


@torch.no_grad()
def transformer_stream_nats(
    model: nn.Module, tokens: torch.Tensor, context_length: int, batch_size: int = 32
) -> tuple[float, int]:
    """(total nats, predicted tokens) of a 1-D token stream, in non-overlapping windows."""
    model.eval()
    targets_total = tokens.numel() - 1
    full_windows = targets_total // context_length
    nats = 0.0
    starts = [index * context_length for index in range(full_windows)]
    for first in range(0, len(starts), batch_size):
        batch_starts = torch.tensor(starts[first : first + batch_size])
        index = batch_starts.unsqueeze(1) + torch.arange(context_length + 1)
        window = tokens[index]
        logits = model(window[:, :-1])
        nats += F.cross_entropy(logits.flatten(0, 1).float(), window[:, 1:].flatten(), reduction="sum").item()
    tail_start = full_windows * context_length
    if tail_start < targets_total:
        window = tokens[tail_start:].unsqueeze(0)
        logits = model(window[:, :-1])
        nats += F.cross_entropy(logits.flatten(0, 1).float(), window[:, 1:].flatten(), reduction="sum").item()
    return nats, targets_total


@torch.no_grad()
def rnn_stream_nats(model: nn.Module, tokens: torch.Tensor, chunk: int = RNN_EVAL_CHUNK) -> tuple[float, int]:
    """(total nats, predicted tokens) of a 1-D token stream run through in one lane with carried state."""
    model.eval()
    state = None
    nats = 0.0
    for first in range(0, tokens.numel() - 1, chunk):
        window = tokens[first : first + chunk + 1].unsqueeze(0)
        logits, state = model(window[:, :-1], state)
        nats += F.cross_entropy(logits.flatten(0, 1).float(), window[:, 1:].flatten(), reduction="sum").item()
    return nats, tokens.numel() - 1


def nats_per_char(total_nats: float, num_chars: int) -> float:
    """Total cross-entropy over the text divided by its character count."""
    if num_chars <= 0:
        raise ValueError("cannot score an empty text")
    return total_nats / num_chars


@torch.no_grad()
def classifier_accuracy(
    model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over (input_ids, attention_mask, labels) batches."""
    model.eval()
    correct, loss, count = 0, 0.0, 0
    for input_ids, attention_mask, labels in batches:
        output = model(input_ids, attention_mask)
        logits = output[0] if isinstance(output, tuple) else output
        correct += int((logits.argmax(dim=-1) == labels).sum())
        loss += F.cross_entropy(logits.float(), labels, reduction="sum").item()
        count += labels.numel()
    return correct / count, loss / count
