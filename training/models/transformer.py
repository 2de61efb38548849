"""Decoder-only Transformer language model and its classifier head, with gpt2 and llama presets.

The parameter names are the contract with `training/export/`: the ONNX graph builder and the Hugging Face
exporter both read this module's state_dict, so rename nothing without updating them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Positions = Literal["learned", "sinusoidal", "rotary"]
Norm = Literal["layernorm", "rmsnorm"]
Mlp = Literal["gelu", "swiglu"]


@dataclass(frozen=True)
class TransformerConfig:
    """Shape and flavour of a decoder; presets fill in the flavour, recipes the size."""

    vocab_size: int = 1024
    context_length: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int = 4
    d_model: int = 256
    d_ff: int = 1024
    positions: Positions = "rotary"
    norm: Norm = "rmsnorm"
    mlp: Mlp = "swiglu"
    bias: bool = False
    dropout: float = 0.0
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @classmethod
    def from_preset(cls, preset: str, **overrides: object) -> TransformerConfig:
        """Start from a named family (gpt2 or llama) and apply size overrides."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        return replace(cls(**PRESETS[preset]), **overrides)

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError("d_model must be divisible by n_head")
        if self.n_head % self.n_kv_head:
            raise ValueError("n_head must be divisible by n_kv_head")
        if self.positions == "rotary" and self.head_dim % 2:
            raise ValueError("rotary positions need an even head_dim")


PRESETS: dict[str, dict[str, object]] = {
    "gpt2": {"positions": "learned", "norm": "layernorm", "mlp": "gelu", "bias": True, "norm_eps": 1e-5},
    "llama": {"positions": "rotary", "norm": "rmsnorm", "mlp": "swiglu", "bias": False, "norm_eps": 1e-5},
}


class RMSNorm(nn.Module):
    """Root-mean-square norm (no centring, no bias), as in llama."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def make_norm(config: TransformerConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.d_model, config.norm_eps)
    return nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)


def rotary_tables(head_dim: int, length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [length, head_dim/2], half-split (rotate_half) convention as in HF llama and ORT GQA."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, T, D] by position; cos/sin are [T, D/2]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """Fixed sine/cosine position table of Vaswani et al., interleaved sin (even) and cos (odd)."""
    position = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)
    return table.float()


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention with optional grouped KV heads and rotary positions."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        kv_dim = config.n_kv_head * config.head_dim
        self.q_proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.k_proj = nn.Linear(config.d_model, kv_dim, bias=config.bias)
        self.v_proj = nn.Linear(config.d_model, kv_dim, bias=config.bias)
        self.o_proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        batch, length, _ = x.shape
        c = self.config
        q = self.q_proj(x).view(batch, length, c.n_head, c.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, c.n_kv_head, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, c.n_kv_head, c.head_dim).transpose(1, 2)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            is_causal=True,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=c.n_kv_head != c.n_head,
        )
        return self.o_proj(y.transpose(1, 2).reshape(batch, length, c.d_model))


class FeedForward(nn.Module):
    """GELU MLP (gpt2, tanh approximation) or SwiGLU (llama)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.kind = config.mlp
        if config.mlp == "swiglu":
            self.gate_proj = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.up_proj = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.down_proj = nn.Linear(config.d_ff, config.d_model, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.attn_norm = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.mlp_norm = make_norm(config)
        self.mlp = FeedForward(config)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        x = x + self.resid_dropout(self.attn(self.attn_norm(x), rotary))
        return x + self.resid_dropout(self.mlp(self.mlp_norm(x)))


class TransformerLM(nn.Module):
    """A GPT: token embedding, position scheme, pre-norm blocks, final norm, (tied) LM head."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        if config.positions == "learned":
            self.pos_emb = nn.Embedding(config.context_length, config.d_model)
        elif config.positions == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_table(config.context_length, config.d_model), False)
        if config.positions == "rotary":
            cos, sin = rotary_tables(config.head_dim, config.context_length, config.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.emb_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.final_norm = make_norm(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        # GPT-2: scale the projections that write into the residual stream by 1/sqrt(2 * n_layer).
        scaled_std = 0.02 / math.sqrt(2 * config.n_layer)
        for name, param in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(param, mean=0.0, std=scaled_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Final-normed activations [B, T, d]: what the LM head and a classifier head read."""
        length = input_ids.shape[1]
        if length > self.config.context_length:
            raise ValueError(
                f"sequence of {length} tokens exceeds context_length {self.config.context_length}"
            )
        x = self.tok_emb(input_ids)
        rotary = None
        if self.config.positions == "learned":
            x = x + self.pos_emb(torch.arange(length, device=input_ids.device))
        elif self.config.positions == "sinusoidal":
            x = x + self.pos_table[:length]
        else:
            rotary = (self.rope_cos[:length], self.rope_sin[:length])
        x = self.emb_dropout(x)
        for block in self.blocks:
            x = block(x, rotary)
        return self.final_norm(x)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.hidden_states(input_ids))


class TransformerClassifier(nn.Module):
    """GPT-1 fine-tuning: a linear head on the pooled hidden states, plus LM logits for the auxiliary loss.

    `pooling = "last"` reads the last real token (GPT-1: the appended `<|eos|>`); `"mean"` averages
    every real token's state, so each token adds its own evidence, as a bag-of-words model's
    features do: it learns from few labelled documents faster than attention learns to gather them.
    """

    POOLINGS = ("last", "mean")

    def __init__(
        self, lm: TransformerLM, num_labels: int, dropout: float = 0.1, pooling: str = "last"
    ) -> None:
        super().__init__()
        if pooling not in self.POOLINGS:
            raise ValueError(f"head_pooling must be one of {self.POOLINGS}, not {pooling!r}")
        self.lm = lm
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(lm.config.d_model, num_labels)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded input: causal attention means padding after a row's last token never reaches it."""
        hidden = self.lm.hidden_states(input_ids)
        if self.pooling == "mean":
            keep = attention_mask.to(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
        else:
            last = attention_mask.long().sum(dim=1) - 1
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.head(self.dropout(pooled)), self.lm.lm_head(hidden)
