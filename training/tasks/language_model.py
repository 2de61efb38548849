"""Language-modelling tasks: random windows for Transformers, truncated BPTT lanes for RNNs.

Both report validation nats per character (see training/metrics.py). Periodic evals score a fixed
prefix of the validation stream (`eval_tokens`), so successive evals are comparable and quick; the
final figure scores the whole stream.

Under data parallelism the global batch is `batch_size` windows (or lanes); rank r trains on its
contiguous share of them (training/distributed.py). Window starts come from one generator seeded
alike on every rank, so the ranks together see exactly the windows a single process would.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.distributed import Ranks
from training.metrics import module_device, nats_per_char, rnn_stream_nats, transformer_stream_nats

State = tuple[torch.Tensor, ...]


def _summed_nats(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")


class _LanguageModelTask(ABC):
    """What both LM tasks share: the val stream, its character counts, and the metric."""

    metric = "val_nats_per_char"
    higher_is_better = False
    early_stopping = False
    every_parameter_trained = True

    def __init__(
        self,
        val_tokens: torch.Tensor,
        val_chars: int,
        subset_tokens: int,
        subset_chars: int,
        ranks: Ranks,
    ) -> None:
        if val_tokens.numel() < 2:
            raise ValueError("the validation stream needs at least two tokens")
        self.val_tokens = val_tokens
        self.val_chars = val_chars
        self.subset_tokens = min(subset_tokens, val_tokens.numel())
        self.subset_chars = subset_chars if self.subset_tokens < val_tokens.numel() else val_chars
        self.ranks = ranks

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
        ranks: Ranks | None = None,
        micro_batch_size: int = 0,
    ) -> None:
        ranks = ranks or Ranks()
        super().__init__(val_tokens, val_chars, subset_tokens, subset_chars, ranks)
        if train_tokens.numel() <= context_length + 1:
            raise ValueError(
                f"{train_tokens.numel()} training tokens cannot fill a {context_length}-token window"
            )
        ranks.check_can_share(batch_size, "windows")
        self.train_tokens = train_tokens
        self.context_length = context_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.offsets = torch.arange(context_length + 1)
        self.parts = ranks.rows(batch_size, micro_batch_size)

    def next_window_starts(self) -> torch.Tensor:
        """Start offsets of the next global batch of windows (the same draw on every rank)."""
        highest_start = self.train_tokens.numel() - self.context_length - 1
        return torch.randint(0, highest_start + 1, (self.batch_size,), generator=self.generator)

    def next_parts(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's micro-batches: inputs and next-token targets, each [rows, context_length]."""
        starts = self.next_window_starts()
        parts = []
        for rows in self.parts:
            windows = self.train_tokens[starts[rows.start : rows.stop].unsqueeze(1) + self.offsets]
            parts.append((windows[:, :-1], windows[:, 1:]))
        return parts

    def part_loss(self, model: nn.Module, part: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        device = module_device(model)
        inputs, targets = (tensor.to(device) for tensor in part)
        return _summed_nats(model(inputs), targets) / (self.batch_size * self.context_length)

    def _train_token_count(self) -> int:
        return self.train_tokens.numel()

    def _stream_nats(self, model: nn.Module, tokens: torch.Tensor) -> tuple[float, int]:
        part = (self.ranks.rank, self.ranks.world_size)
        nats, predicted = transformer_stream_nats(
            model, tokens, self.context_length, self.eval_batch_size, part
        )
        return self.ranks.sum([nats])[0], predicted

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class RecurrentLMTask(_LanguageModelTask):
    """Truncated BPTT: `batch_size` contiguous lanes read in `bptt`-token chunks, state carried across.

    Lane b is the b-th contiguous slice of the training stream, so each lane's chunks follow on from
    each other and the carried (detached) hidden state is the true context. At the end of the lanes
    an epoch ends and the state goes back to zero. Lanes keep their order across epochs: shuffling
    them would cut the context the carried state stands for. A rank owns a contiguous block of
    lanes; the checkpoint keeps every lane's state, so a run resumes with any number of ranks.
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
        ranks: Ranks | None = None,
        micro_batch_size: int = 0,
    ) -> None:
        ranks = ranks or Ranks()
        super().__init__(val_tokens, val_chars, subset_tokens, subset_chars, ranks)
        lane_length = train_tokens.numel() // batch_size
        if lane_length < 2:
            raise ValueError(f"{train_tokens.numel()} tokens cannot fill {batch_size} lanes")
        ranks.check_can_share(batch_size, "lanes")
        self.lanes = train_tokens[: lane_length * batch_size].view(batch_size, lane_length)
        self.bptt = bptt
        self.position = 0
        self.epoch = 0
        self.parts = ranks.rows(batch_size, micro_batch_size)
        self.states: list[State | None] = [None] * len(self.parts)  # one per micro-batch of lanes

    @property
    def state(self) -> State | None:
        """The carried state of this rank's lanes, [layers, lanes, hidden] each (None at an epoch start)."""
        if any(state is None for state in self.states):
            return None
        return tuple(torch.cat(pieces, dim=1) for pieces in zip(*self.states, strict=True))  # type: ignore[arg-type]

    def next_chunk(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next [lanes, ≤bptt] inputs and targets; wraps to a new epoch (and zero state) at the end."""
        if self.position >= self.lanes.shape[1] - 1:
            self.position, self.epoch = 0, self.epoch + 1
            self.states = [None] * len(self.parts)
        length = min(self.bptt, self.lanes.shape[1] - 1 - self.position)
        inputs = self.lanes[:, self.position : self.position + length]
        targets = self.lanes[:, self.position + 1 : self.position + 1 + length]
        self.position += length
        return inputs, targets

    def next_parts(self) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """(micro-batch index, inputs, targets) of this rank's lanes for the next chunk."""
        inputs, targets = self.next_chunk()
        return [
            (index, inputs[rows.start : rows.stop], targets[rows.start : rows.stop])
            for index, rows in enumerate(self.parts)
        ]

    def part_loss(self, model: nn.Module, part: tuple[int, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        index, inputs, targets = part
        device = module_device(model)
        carried = self.states[index]
        if carried is not None:
            carried = tuple(tensor.to(device) for tensor in carried)
        logits, state = model(inputs.to(device), carried)
        self.states[index] = tuple(tensor.detach() for tensor in state)  # TBPTT: keep values, cut history
        return _summed_nats(logits, targets.to(device)) / (self.lanes.shape[0] * inputs.shape[1])

    def _train_token_count(self) -> int:
        return self.lanes.numel()

    def _stream_nats(self, model: nn.Module, tokens: torch.Tensor) -> tuple[float, int]:
        return rnn_stream_nats(model, tokens)  # one sequential pass: every rank computes it whole

    def state_dict(self) -> dict[str, Any]:
        mine = self.state
        pieces = self.ranks.gather(None if mine is None else tuple(t.cpu() for t in mine))
        merged = None
        if all(piece is not None for piece in pieces):
            merged = tuple(torch.cat(layer, dim=1) for layer in zip(*pieces, strict=True))
        return {"position": self.position, "epoch": self.epoch, "state": merged}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position, self.epoch = int(state["position"]), int(state["epoch"])
        every_lane = tuple(state["state"]) if state["state"] is not None else None
        self.states = [
            None if every_lane is None else tuple(t[:, rows.start : rows.stop].clone() for t in every_lane)
            for rows in self.parts
        ]
