"""Language-modelling tasks: random windows for Transformers, truncated BPTT lanes for RNNs.

Both report validation nats per character (see training/evaluate.py). Periodic evals score a fixed
prefix of the validation stream (`eval_tokens`), so successive evals are comparable and quick; the
final figure scores the whole stream.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.evaluate import nats_per_char, rnn_stream_nats, transformer_stream_nats


class _LanguageModelTask(ABC):
    """What both LM tasks share: the val stream, its character counts, and the metric."""

    metric = "val_nats_per_char"
    higher_is_better = False
    early_stopping = False

    def __init__(
        self, val_tokens: torch.Tensor, val_chars: int, subset_tokens: int, subset_chars: int
    ) -> None:
        if val_tokens.numel() < 2:
            raise ValueError("the validation stream needs at least two tokens")
        self.val_tokens = val_tokens
        self.val_chars = val_chars
        self.subset_tokens = min(subset_tokens, val_tokens.numel())
        self.subset_chars = subset_chars if self.subset_tokens < val_tokens.numel() else val_chars

    @abstractmethod
    def _stream_nats(self, model: nn.Module, tokens: torch.Tensor) -> tuple[float, int]:
        """(total nats, predicted tokens) of a stream, scored the way this model family allows."""

    def evaluate(self, model: nn.Module, full: bool) -> dict[str, float]:
        tokens = self.val_tokens if full else self.val_tokens[: self.subset_tokens]
        chars = self.val_chars if full else self.subset_chars
        nats, predicted = self._stream_nats(model, tokens)
        return {self.metric: nats_per_char(nats, chars), "val_nats_per_token": nats / predicted}

    def data_summary(self) -> dict[str, int]:
        return {
            "train_tokens": self._train_token_count(),
            "val_tokens": self.val_tokens.numel(),
            "val_chars": self.val_chars,
            "periodic_eval_tokens": self.subset_tokens,
        }

    @abstractmethod
    def _train_token_count(self) -> int:
        """Training tokens actually used."""


class TransformerLMTask(_LanguageModelTask):
    """Batches of random windows of context_length+1 tokens from the training stream."""

    def __init__(
        self,
        train_tokens: torch.Tensor,
        val_tokens: torch.Tensor,
        val_chars: int,
        context_length: int,
        batch_size: int,
        seed: int,
        subset_tokens: int,
        subset_chars: int,
        eval_batch_size: int = 32,
    ) -> None:
        super().__init__(val_tokens, val_chars, subset_tokens, subset_chars)
        if train_tokens.numel() <= context_length + 1:
            raise ValueError(
                f"{train_tokens.numel()} training tokens cannot fill a {context_length}-token window"
            )
        self.train_tokens = train_tokens
        self.context_length = context_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.offsets = torch.arange(context_length + 1)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets, each [batch, context_length]."""
        highest_start = self.train_tokens.numel() - self.context_length - 1
        starts = torch.randint(0, highest_start + 1, (self.batch_size,), generator=self.generator)
        windows = self.train_tokens[starts.unsqueeze(1) + self.offsets]
        return windows[:, :-1], windows[:, 1:]

    def train_loss(self, model: nn.Module) -> torch.Tensor:
        inputs, targets = self.next_batch()
        logits = model(inputs)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def _train_token_count(self) -> int:
        return self.train_tokens.numel()

    def _stream_nats(self, model: nn.Module, tokens: torch.Tensor) -> tuple[float, int]:
        return transformer_stream_nats(model, tokens, self.context_length, self.eval_batch_size)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class RecurrentLMTask(_LanguageModelTask):
    """Truncated BPTT: `batch_size` contiguous lanes read in `bptt`-token chunks, state carried across.

    Lane b is the b-th contiguous slice of the training stream, so each lane's chunks follow on from
    each other and the carried (detached) hidden state is the true context. At the end of the lanes
    an epoch ends and the state goes back to zero.
    """

    def __init__(
        self,
        train_tokens: torch.Tensor,
        val_tokens: torch.Tensor,
        val_chars: int,
        batch_size: int,
        bptt: int,
        subset_tokens: int,
        subset_chars: int,
    ) -> None:
        super().__init__(val_tokens, val_chars, subset_tokens, subset_chars)
        lane_length = train_tokens.numel() // batch_size
        if lane_length < 2:
            raise ValueError(f"{train_tokens.numel()} tokens cannot fill {batch_size} lanes")
        self.lanes = train_tokens[: lane_length * batch_size].view(batch_size, lane_length)
        self.bptt = bptt
        self.position = 0
        self.epoch = 0
        self.state: tuple[torch.Tensor, ...] | None = None

    def next_chunk(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next [lanes, ≤bptt] inputs and targets; wraps to a new epoch (and zero state) at the end."""
        if self.position >= self.lanes.shape[1] - 1:
            self.position, self.epoch, self.state = 0, self.epoch + 1, None
        length = min(self.bptt, self.lanes.shape[1] - 1 - self.position)
        inputs = self.lanes[:, self.position : self.position + length]
        targets = self.lanes[:, self.position + 1 : self.position + 1 + length]
        self.position += length
        return inputs, targets

    def train_loss(self, model: nn.Module) -> torch.Tensor:
        inputs, targets = self.next_chunk()
        logits, state = model(inputs, self.state)
        self.state = model.detach_state(state)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def _train_token_count(self) -> int:
        return self.lanes.numel()

    def _stream_nats(self, model: nn.Module, tokens: torch.Tensor) -> tuple[float, int]:
        return rnn_stream_nats(model, tokens)

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "epoch": self.epoch, "state": self.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position, self.epoch = int(state["position"]), int(state["epoch"])
        self.state = tuple(state["state"]) if state["state"] is not None else None
