"""Recurrent language models (Elman RNN, LSTM, GRU) and the recurrent sentiment classifier.

Stacked layers are separate torch modules so that dropout sits between layers only, never on the
recurrent edges (Zaremba et al., 2014); the exporter relies on the `layers.{i}` names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

Cell = Literal["rnn", "lstm", "gru"]
Pooling = Literal["last", "mean", "max"]
State = tuple[torch.Tensor, ...]

_CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@dataclass(frozen=True)
class RNNConfig:
    """A recurrent LM: cell type, sizes, dropout between layers, optional weight tying."""

    cell: Cell = "lstm"
    vocab_size: int = 256
    embed_dim: int = 256
    hidden_size: int = 512
    num_layers: int = 2
    dropout: float = 0.2
    tie_weights: bool = False


def make_layers(
    cell: Cell, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool
) -> nn.ModuleList:
    """One single-layer torch RNN per level, so dropout can sit between levels."""
    if cell not in _CELLS:
        raise ValueError(f"unknown cell {cell!r}; choose rnn, lstm or gru")
    width = hidden_size * (2 if bidirectional else 1)
    return nn.ModuleList(
        _CELLS[cell](
            input_size if i == 0 else width, hidden_size, batch_first=True, bidirectional=bidirectional
        )
        for i in range(num_layers)
    )


class RNNLM(nn.Module):
    """Embedding → stacked recurrent layers (dropout between them) → linear head; state in, state out."""

    def __init__(self, config: RNNConfig) -> None:
        super().__init__()
        if config.tie_weights and config.embed_dim != config.hidden_size:
            raise ValueError("tie_weights needs embed_dim == hidden_size")
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        self.layers = make_layers(config.cell, config.embed_dim, config.hidden_size, config.num_layers, False)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        if config.tie_weights:
            self.head.weight = self.embedding.weight

    @property
    def has_cell_state(self) -> bool:
        return self.config.cell == "lstm"

    def init_state(self, batch: int, device: torch.device | str = "cpu") -> State:
        """Zero state: (h,) or (h, c), each [num_layers, batch, hidden]."""
        shape = (self.config.num_layers, batch, self.config.hidden_size)
        count = 2 if self.has_cell_state else 1
        return tuple(torch.zeros(shape, device=device) for _ in range(count))

    @staticmethod
    def detach_state(state: State) -> State:
        """Cut the graph between chunks: truncated BPTT keeps the values, drops the history."""
        return tuple(s.detach() for s in state)

    def forward(self, input_ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.init_state(input_ids.shape[0], input_ids.device)
        x = self.dropout(self.embedding(input_ids))
        new_h, new_c = [], []
        for i, layer in enumerate(self.layers):
            layer_state: torch.Tensor | tuple[torch.Tensor, torch.Tensor]
            if self.has_cell_state:
                layer_state = (state[0][i : i + 1].contiguous(), state[1][i : i + 1].contiguous())
            else:
                layer_state = state[0][i : i + 1].contiguous()
            x, out_state = layer(x, layer_state)
            if self.has_cell_state:
                new_h.append(out_state[0])
                new_c.append(out_state[1])
            else:
                new_h.append(out_state)
            x = self.dropout(x)
        logits = self.head(x)
        next_state = (torch.cat(new_h), torch.cat(new_c)) if self.has_cell_state else (torch.cat(new_h),)
        return logits, next_state


@dataclass(frozen=True)
class RNNClassifierConfig:
    """A many-to-one recurrent classifier: sizes, direction and how the sequence is pooled."""

    cell: Cell = "lstm"
    vocab_size: int = 8192
    embed_dim: int = 256
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.3
    bidirectional: bool = True
    pooling: Pooling = "max"
    num_labels: int = 2


class RNNClassifier(nn.Module):
    """Embedding → stacked (bi)RNN → masked pooling → dropout → linear head.

    Padding is handled by masks, not packed sequences: a forward pass over right padding cannot
    change the real positions, and the backward direction is run on each row reversed within its
    own length, so pad tokens never precede real ones in either direction.
    """

    def __init__(self, config: RNNClassifierConfig) -> None:
        super().__init__()
        if config.pooling not in ("last", "mean", "max"):
            raise ValueError(f"unknown pooling {config.pooling!r}")
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=0)
        self.forward_layers = make_layers(
            config.cell, config.embed_dim, config.hidden_size, config.num_layers, False
        )
        if config.bidirectional:
            self.backward_layers = make_layers(
                config.cell, config.embed_dim, config.hidden_size, config.num_layers, False
            )
        self.dropout = nn.Dropout(config.dropout)
        width = config.hidden_size * (2 if config.bidirectional else 1)
        self.head = nn.Linear(width, config.num_labels)

    def _run(self, layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(layers):
            x, _ = layer(x)
            if i < len(layers) - 1:
                x = self.dropout(x)
        return x

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.bool()
        lengths = mask.long().sum(dim=1)
        x = self.dropout(self.embedding(input_ids))
        outputs = self._run(self.forward_layers, x)
        if self.config.bidirectional:
            reverse_index = reverse_within_length(lengths, input_ids.shape[1])
            gather = reverse_index.unsqueeze(-1)
            backward = self._run(self.backward_layers, x.gather(1, gather.expand(-1, -1, x.shape[-1])))
            backward = backward.gather(1, gather.expand(-1, -1, backward.shape[-1]))
            outputs = torch.cat([outputs, backward], dim=-1)
        pooled = pool(outputs, mask, lengths, self.config.pooling)
        if self.config.bidirectional and self.config.pooling == "last":
            # The backward direction ends at position 0: that is its summary of the whole row.
            hidden = self.config.hidden_size
            pooled = torch.cat([pooled[:, :hidden], outputs[:, 0, hidden:]], dim=-1)
        return self.head(self.dropout(pooled))


def reverse_within_length(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """Index [B, T] that reverses each row's first `length` positions and leaves its padding in place."""
    positions = torch.arange(width, device=lengths.device).unsqueeze(0)
    reversed_positions = lengths.unsqueeze(1) - 1 - positions
    return torch.where(positions < lengths.unsqueeze(1), reversed_positions, positions)


def pool(outputs: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor, how: Pooling) -> torch.Tensor:
    """Masked pooling over time of [B, T, H] outputs; padding never contributes."""
    if how == "last":
        return outputs[torch.arange(outputs.shape[0], device=outputs.device), lengths - 1]
    expanded = mask.unsqueeze(-1)
    if how == "mean":
        return (outputs * expanded).sum(dim=1) / lengths.clamp(min=1).unsqueeze(-1).to(outputs.dtype)
    return outputs.masked_fill(~expanded, torch.finfo(outputs.dtype).min).amax(dim=1)
