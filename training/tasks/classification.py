"""Sequence classification: shuffled, right-padded batches with an attention mask; dev accuracy.

For the Transformer classifier the loss is GPT-1's L = L_cls + λ·L_lm, with the auxiliary LM loss
taken over real tokens only (a target counts when it is not padding). RNN classifiers return class
logits only, and λ is ignored.

Under data parallelism each epoch's order comes from (seed, epoch) on every rank alike, as in
DistributedSampler; rank r pads and trains on its share of each global batch only. Both loss terms
are divided by the global batch's counts (examples, real LM targets), which every rank can compute
from the shared order, so the ranks' shares add up to the single-process loss exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.distributed import Ranks
from training.metrics import classifier_sums, module_device, pooled_classifier_sums

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
    lm_logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Next-token cross-entropy (mean or sum) over positions whose target is a real token."""
    targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
    return F.cross_entropy(
        lm_logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100, reduction=reduction
    )


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
        ranks: Ranks | None = None,
        micro_batch_size: int = 0,
        dev_windows: Sequence[Sequence[Sequence[int]]] | None = None,
        pooling: str = "mean",
    ) -> None:
        if not train_ids or not dev_ids:
            raise ValueError("a classification task needs training and dev examples")
        if any(len(sequence) == 0 for sequence in [*train_ids, *dev_ids]):
            raise ValueError("every example needs at least one token")
        self.train_ids, self.train_labels = list(train_ids), list(train_labels)
        self.batch_size = min(batch_size, len(self.train_ids))
        self.ranks = ranks or Ranks()
        self.ranks.check_can_share(self.batch_size, "examples")
        self.parts = self.ranks.rows(self.batch_size, micro_batch_size)
        self.every_parameter_trained = not (aux_lm_weight is not None and aux_lm_weight == 0)
        self.pad_id = pad_id
        self.seed = seed
        self.aux_lm_weight = aux_lm_weight
        self.length_buckets = length_buckets
        self.dev_size = len(dev_ids)
        # Dev texts longer than one window are scored as the service scores them: windows pooled.
        self.dev_windows = (
            [list(windows) for windows in dev_windows]
            if dev_windows is not None and any(len(windows) > 1 for windows in dev_windows)
            else None
        )
        self.dev_labels, self.pooling, self.eval_batch_size = list(dev_labels), pooling, eval_batch_size
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

    def next_indices(self) -> list[int]:
        """The next full global batch of the epoch; a remainder too small for a batch is dropped and
        the next epoch begins (every rank steps through the same order)."""
        if self.cursor + self.batch_size > len(self.order):
            self.epoch, self.cursor = self.epoch + 1, 0
            self.order = self._epoch_order()
        chosen = self.order[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return chosen

    def next_parts(self) -> list[tuple[Batch, int]]:
        """This rank's padded micro-batches of the next global batch, with the global batch's count
        of real LM targets (the auxiliary loss is a mean over them)."""
        chosen = self.next_indices()
        lm_targets = sum(len(self.train_ids[index]) - 1 for index in chosen)
        return [
            (
                pad_batch(
                    [self.train_ids[i] for i in chosen[rows.start : rows.stop]],
                    [self.train_labels[i] for i in chosen[rows.start : rows.stop]],
                    self.pad_id,
                ),
                lm_targets,
            )
            for rows in self.parts
        ]

    def part_loss(self, model: nn.Module, part: tuple[Batch, int]) -> torch.Tensor:
        batch, lm_targets = part
        device = module_device(model)
        input_ids, attention_mask, labels = (tensor.to(device) for tensor in batch)
        output = model(input_ids, attention_mask)
        class_logits = output[0] if isinstance(output, tuple) else output
        loss = F.cross_entropy(class_logits, labels, reduction="sum") / self.batch_size
        if isinstance(output, tuple) and self.aux_lm_weight and lm_targets:
            lm_nats = auxiliary_lm_loss(output[1], input_ids, attention_mask, reduction="sum")
            loss = loss + self.aux_lm_weight * lm_nats / lm_targets
        return loss

    def evaluate(self, model: nn.Module, full: bool) -> dict[str, float]:
        part = (self.ranks.rank, self.ranks.world_size)
        if self.dev_windows is not None:  # pooled documents: computed whole on every rank
            sums = pooled_classifier_sums(
                model, self.dev_windows, self.dev_labels, self.pooling, self.pad_id, self.eval_batch_size
            )
            correct, loss, count = sums
            return {self.metric: correct / count, "dev_loss": loss / count}
        correct, loss, count = self.ranks.sum(classifier_sums(model, self.dev_batches, part))
        return {self.metric: correct / count, "dev_loss": loss / count}

    def data_summary(self) -> dict[str, int]:
        return {"train_examples": len(self.train_ids), "dev_examples": self.dev_size}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self.order = self._epoch_order()
