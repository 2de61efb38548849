"""Hugging Face export: a folder that `from_pretrained` loads offline as GPT2LMHeadModel or LlamaForCausalLM.

Only the weights are renamed (and, for GPT-2, transposed into its Conv1D layout with q,k,v fused into
c_attn); the math is the same, so transformers reproduces our logits. The llama folder also builds with
onnxruntime-genai's model builder, which reads config.json and generation_config.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from training.build import load_run_model
from training.models.transformer import PRESETS, TransformerConfig, TransformerLM
from training.tokenizer import BOS, BOS_ID, EOS, EOS_ID, PAD, PAD_ID, UNK

Tensors = dict[str, torch.Tensor]


def hf_family(config: TransformerConfig) -> str:
    """gpt2 or llama: the family whose HF class computes exactly what this config does."""
    flavour = {key: getattr(config, key) for key in ("positions", "norm", "mlp", "bias")}
    for name in ("gpt2", "llama"):
        if all(PRESETS[name][key] == value for key, value in flavour.items()):
            if name == "gpt2" and (config.n_kv_head != config.n_head or not config.tie_embeddings):
                break
            return name
    raise ValueError(
        f"no transformers class matches {flavour}, {config.n_kv_head} kv heads; use the gpt2 or llama preset"
    )


def gpt2_tensors(model: TransformerLM) -> Tensors:
    """GPT-2 names; its Conv1D layers store weights [in, out], the transpose of nn.Linear's."""
    sd = model.state_dict()
    out = {"transformer.wte.weight": sd["tok_emb.weight"], "transformer.wpe.weight": sd["pos_emb.weight"]}
    for i in range(model.config.n_layer):
        src, dst = f"blocks.{i}", f"transformer.h.{i}"
        for ours, theirs in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
            out[f"{dst}.{theirs}.weight"] = sd[f"{src}.{ours}.weight"]
            out[f"{dst}.{theirs}.bias"] = sd[f"{src}.{ours}.bias"]
        qkv = [f"{src}.attn.{p}_proj" for p in "qkv"]
        out[f"{dst}.attn.c_attn.weight"] = torch.cat([sd[f"{n}.weight"] for n in qkv]).T
        out[f"{dst}.attn.c_attn.bias"] = torch.cat([sd[f"{n}.bias"] for n in qkv])
        for ours, theirs in (
            ("attn.o_proj", "attn.c_proj"),
            ("mlp.up_proj", "mlp.c_fc"),
            ("mlp.down_proj", "mlp.c_proj"),
        ):
            out[f"{dst}.{theirs}.weight"] = sd[f"{src}.{ours}.weight"].T
            out[f"{dst}.{theirs}.bias"] = sd[f"{src}.{ours}.bias"]
    out["transformer.ln_f.weight"] = sd["final_norm.weight"]
    out["transformer.ln_f.bias"] = sd["final_norm.bias"]
    return out


def gpt2_config(config: TransformerConfig) -> dict[str, Any]:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.context_length,
        "n_embd": config.d_model,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": config.d_ff,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": config.norm_eps,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
    }


def llama_tensors(model: TransformerLM) -> Tensors:
    sd = model.state_dict()
    out = {"model.embed_tokens.weight": sd["tok_emb.weight"], "model.norm.weight": sd["final_norm.weight"]}
    for i in range(model.config.n_layer):
        src, dst = f"blocks.{i}", f"model.layers.{i}"
        out[f"{dst}.input_layernorm.weight"] = sd[f"{src}.attn_norm.weight"]
        out[f"{dst}.post_attention_layernorm.weight"] = sd[f"{src}.mlp_norm.weight"]
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out[f"{dst}.self_attn.{proj}.weight"] = sd[f"{src}.attn.{proj}.weight"]
        for proj in ("gate_proj", "up_proj", "down_proj"):
            out[f"{dst}.mlp.{proj}.weight"] = sd[f"{src}.mlp.{proj}.weight"]
    if not model.config.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out


def llama_config(config: TransformerConfig) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.context_length,
        "rms_norm_eps": config.norm_eps,
        # Both spellings: transformers 5 reads rope_parameters, older readers (and genai) rope_theta.
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": config.tie_embeddings,
    }


def tokenizer_files(tokenizer_path: Path, out_dir: Path, context_length: int) -> None:
    """tokenizer.json plus the minimal tokenizer_config.json that AutoTokenizer needs to use it."""
    shutil.copyfile(tokenizer_path, out_dir / "tokenizer.json")
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": UNK,
        "model_max_length": context_length,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")


def export_hf(model_or_run: TransformerLM | Path, out_dir: Path, tokenizer_path: Path | None = None) -> Path:
    """Write config.json, generation_config.json, model.safetensors and the tokenizer to `out_dir`.

    `model_or_run` is a TransformerLM (then give `tokenizer_path`) or a training run folder.
    """
    if isinstance(model_or_run, TransformerLM):
        model = model_or_run
    else:
        run_dir = Path(model_or_run)
        loaded, _ = load_run_model(run_dir)
        if not isinstance(loaded, TransformerLM):
            raise ValueError(f"{run_dir} holds a {type(loaded).__name__}; only Transformer LMs export to HF")
        model, tokenizer_path = loaded, tokenizer_path or run_dir / "tokenizer.json"
    config = model.config
    family = hf_family(config)
    if tokenizer_path is None:
        raise ValueError("export_hf needs the tokenizer.json (AutoTokenizer and genai's builder read it)")
    tensors = gpt2_tensors(model) if family == "gpt2" else llama_tensors(model)
    hf_config = gpt2_config(config) if family == "gpt2" else llama_config(config)
    special = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}
    hf_config.update(special, dtype="float32", torch_dtype="float32", use_cache=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {name: t.detach().to(torch.float32).contiguous().clone() for name, t in tensors.items()}
    save_file(weights, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    generation = {**special, "do_sample": False, "max_length": config.context_length}
    (out_dir / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    tokenizer_files(Path(tokenizer_path), out_dir, config.context_length)
    return out_dir
