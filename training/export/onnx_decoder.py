"""Assemble a TransformerLM's ONNX decoder around ORT's GroupQueryAttention, for the in-place KV cache.

One graph serves prefill and decode. Each layer's cache buffer [batch, kv_heads, max_cache_len, head_dim]
is both `past_key_values.{i}.*` and `present.{i}.*`, so the engine binds one preallocated buffer to both
and GQA writes the new keys and values into it at each row's own length (from the attention mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch

from training.export.onnx_graph import MS_DOMAIN, GraphBuilder
from training.models.transformer import TransformerConfig, TransformerLM, rotary_tables, sinusoidal_table

Params = dict[str, np.ndarray]

# Rotary and sinusoidal positions extrapolate, so their cache may outgrow the training context:
# the engine benchmark decodes at 1024 tokens of context.
MIN_EXTRAPOLATING_CACHE_LEN = 2048
# ORT 1.31's CPU GroupQueryAttention refuses do_rotary unless head_size is a multiple of 16.
GQA_ROTARY_HEAD_MULTIPLE = 16
EMBEDDING = "tok_emb.weight"


def default_max_cache_len(config: TransformerConfig) -> int:
    """Learned positions stop at the trained table; computed positions get room to run on."""
    if config.positions == "learned":
        return config.context_length
    return max(MIN_EXTRAPOLATING_CACHE_LEN, config.context_length)


def numpy_params(module: torch.nn.Module) -> Params:
    """The state_dict as float32 numpy arrays (tied tensors appear under both names, stored once later)."""
    return {name: t.detach().cpu().float().numpy() for name, t in module.state_dict().items()}


def add_norm(g: GraphBuilder, x: str, params: Params, prefix: str, config: TransformerConfig) -> str:
    """Pre-norm: ORT's SimplifiedLayerNormalization is its RMSNorm kernel; LayerNormalization is standard."""
    weight = g.weight(f"{prefix}.weight", params[f"{prefix}.weight"])
    if config.norm == "rmsnorm":
        return g.op(
            "SimplifiedLayerNormalization", [x, weight], f"{prefix}/rmsnorm", axis=-1, epsilon=config.norm_eps
        )
    inputs = [x, weight]
    if f"{prefix}.bias" in params:
        inputs.append(g.weight(f"{prefix}.bias", params[f"{prefix}.bias"]))
    return g.op("LayerNormalization", inputs, f"{prefix}/layernorm", axis=-1, epsilon=config.norm_eps)


def add_mlp(g: GraphBuilder, x: str, params: Params, prefix: str, config: TransformerConfig) -> str:
    """GELU with the tanh approximation (as torch's approximate="tanh") or SwiGLU."""

    def linear(name: str, inp: str) -> str:
        return g.linear(
            inp, params[f"{prefix}.{name}.weight"], params.get(f"{prefix}.{name}.bias"), f"{prefix}.{name}"
        )

    if config.mlp == "swiglu":
        gate = linear("gate_proj", x)
        silu = g.op("Mul", [gate, g.op("Sigmoid", [gate], f"{prefix}/sigmoid")], f"{prefix}/silu")
        hidden = g.op("Mul", [silu, linear("up_proj", x)], f"{prefix}/swiglu")
    else:
        hidden = g.op("Gelu", [linear("up_proj", x)], f"{prefix}/gelu", approximate="tanh")
    return linear("down_proj", hidden)


@dataclass(frozen=True)
class Rotary:
    """Rotary tables and the positions to rotate at.

    GQA rotates inside the kernel (`fused`, deriving each row's positions from its mask length) only for
    head_dim a multiple of 16; other head sizes get a RotaryEmbedding node reading `position_ids`.
    """

    cos: str
    sin: str
    position_ids: str
    fused: bool


def add_attention(
    g: GraphBuilder,
    x: str,
    params: Params,
    layer: int,
    config: TransformerConfig,
    lengths: tuple[str, str],
    cache: tuple[str, str, str, str],
    rotary: Rotary | None,
) -> str:
    """QKV projection → GroupQueryAttention (cache written in place) → o_proj.

    `lengths` is (seqlens_k, total_sequence_length); `cache` is (past_key, past_value, present_key,
    present_value) names, empty strings for a cache-free graph.
    """
    prefix = f"blocks.{layer}.attn"

    def projection(names: tuple[str, ...], out: str) -> str:
        weight = np.concatenate([params[f"{prefix}.{n}.weight"] for n in names], axis=0)
        bias = np.concatenate([params[f"{prefix}.{n}.bias"] for n in names], axis=0) if config.bias else None
        return g.linear(x, weight, bias, f"{prefix}.{out}")

    if rotary is None or rotary.fused:
        # One packed MatMul; GQA splits q, k and v itself.
        qkv = [projection(("q_proj", "k_proj", "v_proj"), "qkv_proj"), "", ""]
    else:
        qkv = [projection((name,), name) for name in ("q_proj", "k_proj", "v_proj")]
        for i, heads in ((0, config.n_head), (1, config.n_kv_head)):
            qkv[i] = g.op(
                "RotaryEmbedding",
                [qkv[i], rotary.position_ids, rotary.cos, rotary.sin],
                f"{prefix}/rotary",
                domain=MS_DOMAIN,
                num_heads=heads,
                rotary_embedding_dim=config.head_dim,
                interleaved=0,
            )
    past_key, past_value, present_key, present_value = cache
    inputs = [*qkv, past_key, past_value, *lengths]
    if rotary is not None and rotary.fused:
        inputs += [rotary.cos, rotary.sin]
    attended = g.fresh(f"{prefix}/gqa")
    present = [
        present_key or g.fresh(f"{prefix}/present_key"),
        present_value or g.fresh(f"{prefix}/present_value"),
    ]
    g.op_into(
        "GroupQueryAttention",
        inputs,
        [attended, *present],
        domain=MS_DOMAIN,
        num_heads=config.n_head,
        kv_num_heads=config.n_kv_head,
        scale=1.0 / float(np.sqrt(config.head_dim)),
        do_rotary=int(rotary is not None and rotary.fused),
        rotary_interleaved=0,
    )
    o_proj = f"{prefix}.o_proj"
    return g.linear(attended, params[f"{o_proj}.weight"], params.get(f"{o_proj}.bias"), o_proj)


def add_sequence_lengths(g: GraphBuilder, attention_mask: str) -> tuple[str, str]:
    """GQA's per-row `seqlens_k = sum(mask) - 1` (int32) and scalar `total_sequence_length = mask.shape[1]`.

    Only the count of ones per row matters, so right-, left- or fixed-width masks all work.
    """
    count = g.op("ReduceSum", [attention_mask, g.const([1])], "mask_count", keepdims=0)
    last = g.op("Sub", [count, g.const(1)], "mask_last_index")
    seqlens_k = g.op("Cast", [last], "seqlens_k", to=onnx.TensorProto.INT32)
    width = g.op("Gather", [g.op("Shape", [attention_mask], "mask_shape"), g.const(1)], "mask_width", axis=0)
    total = g.op("Cast", [width], "total_sequence_length", to=onnx.TensorProto.INT32)
    return seqlens_k, total


def add_embeddings(
    g: GraphBuilder,
    input_ids: str,
    position_ids: str,
    params: Params,
    config: TransformerConfig,
    table_len: int,
) -> tuple[str, Rotary | None]:
    """Token embedding plus additive positions; for rotary, the cos/sin tables attention reads instead."""
    x = g.op("Gather", [g.weight(EMBEDDING, params[EMBEDDING]), input_ids], "tok_emb", axis=0)
    if config.positions == "rotary":
        cos, sin = rotary_tables(config.head_dim, table_len, config.rope_theta)
        fused = config.head_dim % GQA_ROTARY_HEAD_MULTIPLE == 0
        return x, Rotary(
            g.weight("rope_cos", cos.numpy()), g.weight("rope_sin", sin.numpy()), position_ids, fused
        )
    if config.positions == "learned":
        table = g.weight("pos_emb.weight", params["pos_emb.weight"])
    else:
        table = g.weight("pos_table", sinusoidal_table(table_len, config.d_model).numpy())
    positions = g.op("Gather", [table, position_ids], "pos_emb", axis=0)
    return g.op("Add", [x, positions], "embeddings"), None


def add_decoder_body(
    g: GraphBuilder,
    model: TransformerLM,
    inputs: tuple[str, str, str],
    table_len: int,
    cache_names: list[tuple[str, str, str, str]] | None = None,
) -> str:
    """Embeddings, pre-norm blocks and the final norm over (input_ids, position_ids, attention_mask).

    Returns the final hidden states [B, S, d]; the token embedding is stored under the name `EMBEDDING`.
    """
    input_ids, position_ids, attention_mask = inputs
    config = model.config
    params = numpy_params(model)
    lengths = add_sequence_lengths(g, attention_mask)
    x, rotary = add_embeddings(g, input_ids, position_ids, params, config, table_len)
    for i in range(config.n_layer):
        cache = cache_names[i] if cache_names else ("", "", "", "")
        normed = add_norm(g, x, params, f"blocks.{i}.attn_norm", config)
        attended = add_attention(g, normed, params, i, config, lengths, cache, rotary)
        x = g.op("Add", [x, attended], f"blocks.{i}/attn_residual")
        normed = add_norm(g, x, params, f"blocks.{i}.mlp_norm", config)
        x = g.op(
            "Add", [x, add_mlp(g, normed, params, f"blocks.{i}.mlp", config)], f"blocks.{i}/mlp_residual"
        )
    return add_norm(g, x, params, "final_norm", config)


def add_lm_head(g: GraphBuilder, model: TransformerLM, hidden: str) -> str:
    """Logits; a tied head reads the embedding through a Transpose (folded by ORT at load, stored once)."""
    if model.config.tie_embeddings:
        head = g.op("Transpose", [EMBEDDING], "lm_head_t", perm=[1, 0])
    else:
        head = g.weight("lm_head.weight_t", model.lm_head.weight.detach().cpu().float().numpy().T)
    return g.op_into("MatMul", [hidden, head], ["logits"])[0]


def cache_names(layer: int) -> tuple[str, str, str, str]:
    """Contract names: past_key_values.{i}.key/value in, present.{i}.key/value out."""
    past = f"past_key_values.{layer}"
    return f"{past}.key", f"{past}.value", f"present.{layer}.key", f"present.{layer}.value"


def build_decoder(model: TransformerLM, max_cache_len: int | None = None) -> onnx.ModelProto:
    """The contract's decoder graph, weights inside, for a cache of `max_cache_len` positions."""
    config = model.config
    max_len = max_cache_len or default_max_cache_len(config)
    if config.positions == "learned" and max_len > config.context_length:
        raise ValueError(
            f"learned positions stop at {config.context_length}; max_cache_len {max_len} is too long"
        )
    g = GraphBuilder("seqserve_decoder")
    input_ids = g.add_input("input_ids", "int64", ["batch", "sequence_length"])
    attention_mask = g.add_input("attention_mask", "int64", ["batch", "total_sequence_length"])
    position_ids = g.add_input("position_ids", "int64", ["batch", "sequence_length"])
    inputs = (input_ids, position_ids, attention_mask)
    cache_shape = ["batch", config.n_kv_head, max_len, config.head_dim]
    layers = [cache_names(i) for i in range(config.n_layer)]
    for past_key, past_value, _, _ in layers:
        g.add_input(past_key, "float32", cache_shape)
        g.add_input(past_value, "float32", cache_shape)
    add_lm_head(g, model, add_decoder_body(g, model, inputs, max_len, layers))
    g.add_output("logits", "float32", ["batch", "sequence_length", config.vocab_size])
    for _, _, present_key, present_value in layers:
        g.add_output(present_key, "float32", cache_shape)
        g.add_output(present_value, "float32", cache_shape)
    return g.to_model({MS_DOMAIN: 1})
