"""A Hugging Face llama folder rebuilt from a committed artifact alone (manifest, model.onnx, tokenizer).

Why: the peers of the engine benchmark (onnxruntime-genai's builder, Optimum, transformers) load HF
checkpoints, and the training run that `export_hf` reads is not committed. The artifact's model.onnx
holds every weight as an initializer and its nodes hold the rest of the architecture (heads, norm
epsilon, rotary tables), so a fresh clone can rebuild the same checkpoint without retraining.

Every initializer must be claimed by the mapping, and the rotary tables must be reproduced exactly
from the recovered theta; anything else is refused rather than silently mistranslated.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from safetensors.numpy import save_file

from training.export.hf import llama_config, tokenizer_files
from training.models.transformer import PRESETS, TransformerConfig, rotary_tables

# Slack for a recovered theta: the tables are float32, so theta is exact only to a few parts in 1e6.
ROPE_TABLE_TOLERANCE = 1e-6


def initializer_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers by the name the graph computes with: a float16-stored weight is read through its
    Cast node (training/export/half_storage.py) and returned as float32 under the Cast's output name."""
    stored = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Cast" and len(node.input) == 1 and node.input[0] in stored:
            stored[node.output[0]] = stored.pop(node.input[0]).astype(np.float32)
    return stored


def _attribute(node: onnx.NodeProto, name: str) -> Any:
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    raise ValueError(f"{node.op_type} node {node.name} has no attribute {name}")


def recover_rope_theta(cos: np.ndarray, sin: np.ndarray, head_dim: int) -> float:
    """The theta whose half-split tables equal `cos`/`sin` [positions, head_dim/2], found from the
    angle of the second frequency at position 1 and confirmed against the whole table."""
    inv_freq_1 = math.atan2(float(sin[1, 1]), float(cos[1, 1]))
    estimate = inv_freq_1 ** (-head_dim / 2)
    for theta in (float(round(estimate)), estimate):
        want_cos, want_sin = rotary_tables(head_dim, cos.shape[0], theta)
        error = max(np.abs(want_cos.numpy() - cos).max(), np.abs(want_sin.numpy() - sin).max())
        if error <= ROPE_TABLE_TOLERANCE:
            return theta
    raise ValueError(f"the rotary tables match no theta (nearest {estimate:.6g}, error {error:.3g})")


def llama_from_onnx(model: onnx.ModelProto, manifest: dict[str, Any]) -> tuple[TransformerConfig, dict]:
    """(config, HF llama state dict as float32 arrays) read from the decoder graph and its manifest."""
    if manifest.get("architecture") != "llama" or manifest.get("task") != "generate":
        raise ValueError(
            f"only llama decoders rebuild as an HF checkpoint, not {manifest.get('architecture')!r}"
        )
    weights = initializer_arrays(model)
    attention = [n for n in model.graph.node if n.op_type == "GroupQueryAttention"]
    norms = [n for n in model.graph.node if n.op_type == "SimplifiedLayerNormalization"]
    if not attention or not norms:
        raise ValueError("no GroupQueryAttention or RMSNorm nodes: not a seqserve llama decoder graph")
    cache = manifest["onnx"]["kv_cache"]
    n_layer, head_dim = int(cache["num_layers"]), int(cache["head_dim"])
    n_head, n_kv_head = (
        int(_attribute(attention[0], "num_heads")),
        int(_attribute(attention[0], "kv_num_heads")),
    )
    if _attribute(attention[0], "rotary_interleaved"):
        raise ValueError("interleaved rotary has no HF llama equivalent")
    if not math.isclose(_attribute(attention[0], "scale"), head_dim**-0.5, rel_tol=1e-6):
        raise ValueError("attention scale is not 1/sqrt(head_dim)")
    embedding = weights.pop("tok_emb.weight")
    vocab_size, d_model = embedding.shape
    lm_head = weights.pop("lm_head.weight_t", None)
    sizes = dict(
        vocab_size=int(vocab_size),
        context_length=int(manifest["context_length"]),
        n_layer=n_layer,
        n_head=n_head,
        n_kv_head=n_kv_head,
        d_model=int(d_model),
        d_ff=int(weights["blocks.0.mlp.gate_proj.weight_t"].shape[1]),
        # The attribute is float32 (1e-5 reads 9.99999975e-06); its shortest float32 spelling is the
        # number the recipe wrote, and converts back to the same float32 in every reader.
        norm_eps=float(str(np.float32(_attribute(norms[0], "epsilon")))),
        rope_theta=recover_rope_theta(weights.pop("rope_cos"), weights.pop("rope_sin"), head_dim),
        tie_embeddings=lm_head is None,
    )
    config = TransformerConfig(**{**PRESETS["llama"], **sizes})
    if config.head_dim != head_dim:
        raise ValueError(f"d_model / n_head = {config.head_dim}, but the cache's head_dim is {head_dim}")
    state = {"model.embed_tokens.weight": embedding, "model.norm.weight": weights.pop("final_norm.weight")}
    if lm_head is not None:
        state["lm_head.weight"] = lm_head.T
    q_width, kv_width = n_head * head_dim, n_kv_head * head_dim
    for i in range(n_layer):
        src, dst = f"blocks.{i}", f"model.layers.{i}"
        state[f"{dst}.input_layernorm.weight"] = weights.pop(f"{src}.attn_norm.weight")
        state[f"{dst}.post_attention_layernorm.weight"] = weights.pop(f"{src}.mlp_norm.weight")
        packed = weights.pop(f"{src}.attn.qkv_proj.weight_t", None)  # [d_model, q + k + v] when fused
        if packed is not None:
            bounds = {"q_proj": (0, q_width), "k_proj": (q_width, q_width + kv_width)}
            bounds["v_proj"] = (q_width + kv_width, q_width + 2 * kv_width)
            for proj, (lo, hi) in bounds.items():
                state[f"{dst}.self_attn.{proj}.weight"] = packed[:, lo:hi].T
        else:
            for proj in ("q_proj", "k_proj", "v_proj"):
                state[f"{dst}.self_attn.{proj}.weight"] = weights.pop(f"{src}.attn.{proj}.weight_t").T
        state[f"{dst}.self_attn.o_proj.weight"] = weights.pop(f"{src}.attn.o_proj.weight_t").T
        for proj in ("gate_proj", "up_proj", "down_proj"):
            state[f"{dst}.mlp.{proj}.weight"] = weights.pop(f"{src}.mlp.{proj}.weight_t").T
    # An int8 KV cache's scales (training/export/kv_quant.py) belong to the cache, not to the weights.
    leftover = sorted(
        name
        for name, array in weights.items()
        if array.dtype.kind == "f" and not name.startswith("kv_scale.")
    )
    if leftover:
        raise ValueError(f"weights with no HF llama counterpart: {leftover}")
    return config, {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in state.items()}


def hf_from_artifact(artifact: Path, out_dir: Path) -> Path:
    """Write config.json, generation_config.json, model.safetensors and the tokenizer files, as
    `export_hf` does for a training run, from `artifact` (an exported_models/<name> folder)."""
    artifact = Path(artifact)
    manifest = json.loads((artifact / "manifest.json").read_text())
    config, state = llama_from_onnx(onnx.load(str(artifact / manifest["onnx"]["file"])), manifest)
    tokens = manifest["tokenizer"]
    special = {
        "bos_token_id": tokens["bos_id"],
        "eos_token_id": tokens["eos_id"],
        "pad_token_id": tokens["pad_id"],
    }
    hf_config = {
        **llama_config(config),
        **special,
        "dtype": "float32",
        "torch_dtype": "float32",
        "use_cache": True,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    generation = {**special, "do_sample": False, "max_length": config.context_length}
    (out_dir / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    tokenizer_files(artifact / tokens["file"], out_dir, config.context_length)
    return out_dir
