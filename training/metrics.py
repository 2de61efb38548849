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


@torch.no_grad()
def window_log_probs(
    model: nn.Module, windows: Sequence[Sequence[int]], pad_id: int, batch_size: int
) -> list[list[float]]:
    """Class log-probabilities of each window, in the order given; batches are sorted by length so
    padding costs little (the models ignore padding, which the test suite checks)."""
    model.eval()
    device = module_device(model)
    order = sorted(range(len(windows)), key=lambda index: len(windows[index]))
    rows: list[list[float]] = [[] for _ in windows]
    for first in range(0, len(order), batch_size):
        chosen = order[first : first + batch_size]
        width = max(len(windows[index]) for index in chosen)
        input_ids = torch.full((len(chosen), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(chosen), width), dtype=torch.long)
        for row, index in enumerate(chosen):
            input_ids[row, : len(windows[index])] = torch.tensor(list(windows[index]), dtype=torch.long)
            attention_mask[row, : len(windows[index])] = 1
        output = model(input_ids.to(device), attention_mask.to(device))
        logits = output[0] if isinstance(output, tuple) else output
        for row, values in zip(chosen, F.log_softmax(logits.float(), dim=-1).tolist(), strict=True):
            rows[row] = values
    return rows


def pooled_classifier_sums(
    model: nn.Module,
    documents: Sequence[Sequence[Sequence[int]]],
    labels: Sequence[int],
    pooling: str,
    pad_id: int,
    batch_size: int,
) -> tuple[int, float, int]:
    """(correct, summed cross-entropy, documents) when each document is scored as its windows' pooled
    log-probabilities (training/long_documents.py): the figure the service reproduces."""
    from training.long_documents import pool_log_probabilities

    flat = [window for document in documents for window in document]
    rows = window_log_probs(model, flat, pad_id, batch_size)
    correct, loss, at = 0, 0.0, 0
    for document, label in zip(documents, labels, strict=True):
        pooled = pool_log_probabilities(rows[at : at + len(document)], pooling)
        at += len(document)
        correct += int(max(range(len(pooled)), key=pooled.__getitem__) == label)
        loss -= pooled[label]
    return correct, loss, len(documents)
