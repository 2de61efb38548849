"""Sequence classification: shuffled, right-padded batches with an attention mask; dev accuracy.

For the Transformer classifier the loss is GPT-1's L = L_cls + λ·L_lm, with the auxiliary LM loss
taken over real tokens only (a target counts when it is not padding). RNN classifiers return class
logits only, and λ is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.evaluate import classifier_accuracy

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def pad_batch(sequences: Sequence[Sequence[int]], labels: Sequence[int], pad_id: int) -> Batch:
    """(input_ids, attention_mask, labels), right-padded to the longest row."""
    width = max(len(sequence) for sequence in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        attention_mask[row, : len(sequence)] = 1
    return input_ids, attention_mask, torch.tensor(labels, dtype=torch.long)


def auxiliary_lm_loss(
    lm_logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose target is a real token."""
    targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
    return F.cross_entropy(lm_logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100)


def bucket_by_length(
    order: list[int], lengths: Sequence[int], batch_size: int, pool_batches: int, generator: torch.Generator
) -> list[int]:
    """Sort each pool of `pool_batches` shuffled batches by length, then shuffle the batches.

    Batches of similar lengths waste little compute on padding (half of it with SST-2's random
    batches), while pools keep the epoch's order random. Every example still appears once.
    """
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda index: lengths[index])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    full = [batch for batch in batches if len(batch) == batch_size]
    rest = [index for batch in batches if len(batch) < batch_size for index in batch]
    shuffled = torch.randperm(len(full), generator=generator).tolist()
    return [index for b in shuffled for index in full[b]] + rest


class ClassificationTask:
    """Epochs of shuffled training examples; each epoch's order is derived from (seed, epoch)."""

    metric = "dev_accuracy"
    higher_is_better = True
    early_stopping = True

    def __init__(
        self,
        train_ids: Sequence[Sequence[int]],
        train_labels: Sequence[int],
        dev_ids: Sequence[Sequence[int]],
        dev_labels: Sequence[int],
        batch_size: int,
        pad_id: int,
        seed: int,
        aux_lm_weight: float | None = None,
        eval_batch_size: int = 32,
        length_buckets: int = 0,
    ) -> None:
        if not train_ids or not dev_ids:
            raise ValueError("a classification task needs training and dev examples")
        if any(len(sequence) == 0 for sequence in [*train_ids, *dev_ids]):
            raise ValueError("every example needs at least one token")
        self.train_ids, self.train_labels = list(train_ids), list(train_labels)
        self.batch_size = min(batch_size, len(self.train_ids))
        self.pad_id = pad_id
        self.seed = seed
        self.aux_lm_weight = aux_lm_weight
        self.length_buckets = length_buckets
        self.dev_size = len(dev_ids)
        self.epoch, self.cursor = 0, 0
        self.order = self._epoch_order()
        # Dev batches are built once, sorted by length so padding costs little.
        by_length = sorted(range(len(dev_ids)), key=lambda index: len(dev_ids[index]))
        self.dev_batches = [
            pad_batch([dev_ids[i] for i in chunk], [dev_labels[i] for i in chunk], pad_id)
            for chunk in (
                by_length[k : k + eval_batch_size] for k in range(0, len(by_length), eval_batch_size)
            )
        ]

    def _epoch_order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.train_ids), generator=generator).tolist()
        if self.length_buckets <= 0:
            return order
        lengths = [len(ids) for ids in self.train_ids]
        return bucket_by_length(order, lengths, self.batch_size, self.length_buckets, generator)

    def next_batch(self) -> Batch:
        """The next full batch of the epoch; a remainder too small for a batch rolls to the next epoch."""
        if self.cursor + self.batch_size > len(self.order):
            self.epoch, self.cursor = self.epoch + 1, 0
            self.order = self._epoch_order()
        chosen = self.order[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return pad_batch(
            [self.train_ids[i] for i in chosen], [self.train_labels[i] for i in chosen], self.pad_id
        )

    def train_loss(self, model: nn.Module) -> torch.Tensor:
        input_ids, attention_mask, labels = self.next_batch()
        output = model(input_ids, attention_mask)
        if not isinstance(output, tuple):
            return F.cross_entropy(output, labels)
        class_logits, lm_logits = output
        loss = F.cross_entropy(class_logits, labels)
        if self.aux_lm_weight:
            loss = loss + self.aux_lm_weight * auxiliary_lm_loss(lm_logits, input_ids, attention_mask)
        return loss

    def evaluate(self, model: nn.Module, full: bool) -> dict[str, float]:
        accuracy, loss = classifier_accuracy(model, self.dev_batches)
        return {self.metric: accuracy, "dev_loss": loss}

    def data_summary(self) -> dict[str, int]:
        return {"train_examples": len(self.train_ids), "dev_examples": self.dev_size}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self.order = self._epoch_order()
