"""An onnxruntime-genai model folder over the very graph seqserve serves on the provider.

Why not genai's model builder (as bench/engine does on the CPU): it rebuilds its own graph from a HF
checkpoint, which needs torch to recover, and the GPU check must compare the two runtimes on the same
float16 weights. The committed graphs already use genai's input and output names (input_ids,
attention_mask, position_ids, past_key_values.N.key/value, logits, present.N.key/value) and its
GroupQueryAttention with a shared past/present buffer, so a genai_config.json naming them is all
genai needs. The attention heads are read from the graph itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

from service.engine.manifest import read_manifest


def attention_heads(graph: onnx.GraphProto) -> tuple[int, int]:
    """(num_heads, kv_num_heads) of the graph's first GroupQueryAttention."""
    for node in graph.node:
        if node.op_type == "GroupQueryAttention":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            return int(attrs["num_heads"]), int(attrs["kv_num_heads"])
    raise ValueError("no GroupQueryAttention node: genai's decoder config needs one")


def genai_config(
    tokenizer: dict[str, Any], kv: dict[str, Any], filename: str, heads: int, provider: str, threads: int
) -> dict:
    """genai's config for one decoder graph: `kv` is the served variant's cache geometry."""
    tok = tokenizer
    session_options: dict[str, Any] = {
        "log_id": "onnxruntime-genai",
        "provider_options": [{"cuda": {}}] if provider == "cuda" else [],
        "intra_op_num_threads": threads,
        "inter_op_num_threads": 1,
    }
    return {
        "model": {
            "bos_token_id": tok.get("bos_id", 1),
            "eos_token_id": tok.get("eos_id", 2),
            "pad_token_id": tok.get("pad_id", 0),
            "context_length": int(kv["max_len"]),
            "vocab_size": int(tok["vocab_size"]),
            "type": "llama",
            "decoder": {
                "session_options": session_options,
                "filename": filename,
                "head_size": int(kv["head_dim"]),
                "hidden_size": heads * int(kv["head_dim"]),
                "num_attention_heads": heads,
                "num_hidden_layers": int(kv["num_layers"]),
                "num_key_value_heads": int(kv["kv_heads"]),
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "position_ids": "position_ids",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
            },
        },
        "search": {
            "do_sample": False,
            "max_length": int(kv["max_len"]),
            "num_beams": 1,
            "past_present_share_buffer": True,
        },
    }


def genai_folder(model_dir: Path, provider: str, out_dir: Path, threads: int) -> Path:
    """`out_dir` with genai_config.json and a link to the provider's variant (and its data files)."""
    parsed = read_manifest(Path(model_dir), verify=False)
    variant = parsed.variant(provider)
    path = parsed.variant_path(variant)
    out_dir.mkdir(parents=True, exist_ok=True)
    graph = onnx.load(str(path), load_external_data=False).graph
    heads, _ = attention_heads(graph)
    for source in [path, *sorted(path.parent.glob(path.name + ".data"))]:
        link = out_dir / source.name
        if not link.exists():
            link.symlink_to(source.resolve())
    config = genai_config(parsed.tokenizer, variant.kv_cache or {}, path.name, heads, provider, threads)
    (out_dir / "genai_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out_dir
