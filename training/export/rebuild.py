"""Training's own torch model rebuilt from a committed artifact: model.onnx's weights + the recipe.

Why: training run folders (checkpoints) are not committed and retraining takes ~17 minutes a model,
yet a graph change (fusions, a quantized cache, a float16 variant) means exporting again. The decoder
graph stores every weight as an initializer named after the torch parameter it came from (`X.weight_t`
is `X.weight` transposed; q/k/v are packed as `qkv_proj`), and the recipe under training/configs gives
the architecture. The rebuilt model must reproduce the committed graph's logits before anything is
exported from it (`check_rebuild`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from training.build import build_model, resolve_model_config
from training.data import REPO_ROOT
from training.export.hf_from_onnx import initializer_arrays
from training.export.kv_quant import strip_kv_quantization
from training.export.ort_decoder import greedy_with_logits, make_session
from training.export.parity import TOLERANCE, ParityError, max_diff
from training.export.torch_reference import greedy_with_logits as torch_greedy
from training.models.transformer import TransformerLM, rotary_tables
from training.recipe import Recipe, load_recipe

# Initializers the graph builder derives from the config rather than from a parameter.
DERIVED = {"rope_cos", "rope_sin", "pos_table"}
QUANTIZED_WEIGHT_OPS = {"MatMulNBits", "MatMulInteger", "DynamicQuantizeMatMul"}
REBUILD_PROMPTS = 3
REBUILD_TOKENS = 32


@dataclass(frozen=True)
class Rebuilt:
    """A committed artifact's torch model, with the recipe and manifest it was exported with."""

    model: TransformerLM
    recipe: Recipe
    manifest: dict[str, Any]
    folder: Path


def torch_state_from_graph(weights: dict[str, np.ndarray], config: Any) -> dict[str, torch.Tensor]:
    """TransformerLM state_dict names from the decoder graph's initializer names."""
    q_width, kv_width = config.n_head * config.head_dim, config.n_kv_head * config.head_dim
    bounds = {
        "q_proj": (0, q_width),
        "k_proj": (q_width, q_width + kv_width),
        "v_proj": (q_width + kv_width, q_width + 2 * kv_width),
    }
    state: dict[str, np.ndarray] = {}
    for name, array in weights.items():
        if name.startswith(("const", "kv_scale.")) or name in DERIVED or array.dtype.kind != "f":
            continue
        if ".qkv_proj." in name:
            stem, kind = name.split(".qkv_proj.")
            for proj, (lo, hi) in bounds.items():
                part = array[:, lo:hi].T if kind == "weight_t" else array[lo:hi]
                state[f"{stem}.{proj}.{kind.removesuffix('_t')}"] = part
        elif name.endswith(".weight_t"):
            state[name.removesuffix("_t")] = array.T
        else:
            state[name] = array
    if config.tie_embeddings:
        state["lm_head.weight"] = state["tok_emb.weight"]
    return {name: torch.from_numpy(np.array(a, dtype=np.float32, copy=True)) for name, a in state.items()}


def committed_recipe(manifest: dict[str, Any]) -> Recipe:
    """The recipe the manifest names (training.config), relative to the repository root."""
    source = manifest.get("training", {}).get("config")
    if not source:
        raise ValueError(f"{manifest['name']}: the manifest names no recipe (training.config)")
    return load_recipe(REPO_ROOT / source)


def transformer_from_graph(graph: onnx.ModelProto, manifest: dict[str, Any], recipe: Recipe) -> TransformerLM:
    """The recipe's TransformerLM holding the graph's weights; refuses any mismatch of shape or name."""
    if recipe.kind != "transformer_lm":
        raise ValueError(f"{manifest['name']}: only transformer_lm artifacts are rebuilt, not {recipe.kind}")
    config_dict = resolve_model_config(recipe.model, int(manifest["tokenizer"]["vocab_size"]))
    model = build_model("transformer_lm", config_dict)
    assert isinstance(model, TransformerLM)
    quantized = sorted({n.op_type for n in graph.graph.node if n.op_type in QUANTIZED_WEIGHT_OPS})
    if quantized:
        raise ValueError(
            f"{manifest['name']}: weights stored through {quantized} cannot give back float32 weights"
        )
    weights = initializer_arrays(graph)
    config = model.config
    if config.positions == "rotary":
        max_len = int(manifest["onnx"]["kv_cache"]["max_len"])
        cos, sin = rotary_tables(config.head_dim, max_len, config.rope_theta)
        error = max(max_diff(cos.numpy(), weights["rope_cos"]), max_diff(sin.numpy(), weights["rope_sin"]))
        if error > 1e-6:
            raise ValueError(f"the graph's rotary tables differ from the recipe's theta by {error:.3g}")
    state = torch_state_from_graph(weights, config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if config.tie_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"graph and recipe disagree: missing {sorted(missing)}, unexpected {unexpected}")
    return model.eval()


def rebuild_artifact(folder: Path) -> Rebuilt:
    """Read exported_models/<name>/ and rebuild its torch model (not yet checked: see check_rebuild)."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    recipe = committed_recipe(manifest)
    graph = onnx.load(str(folder / manifest["onnx"]["file"]))
    return Rebuilt(transformer_from_graph(graph, manifest, recipe), recipe, manifest, folder)


def fixed_prompts(vocab_size: int, count: int, seed: int = 7) -> list[list[int]]:
    """Prompts of ordinary token ids (specials excluded) of a few lengths, the same every run."""
    rng = np.random.default_rng(seed)
    return [
        rng.integers(4, vocab_size, size=length).tolist() for length in (3, 17, 40, 9, 64, 5, 28, 12)[:count]
    ]


def check_rebuild(rebuilt: Rebuilt, tolerance: float = TOLERANCE, tokens: int = REBUILD_TOKENS) -> float:
    """The rebuilt model must give the committed graph's greedy tokens and logits; returns max |diff|.

    An int8-cache graph is compared with its quantization stripped (exactly its float32-cache build)."""
    graph = strip_kv_quantization(onnx.load(str(rebuilt.folder / rebuilt.manifest["onnx"]["file"])))
    session = make_session(graph)
    worst = 0.0
    for prompt in fixed_prompts(rebuilt.model.config.vocab_size, REBUILD_PROMPTS):
        ours, our_logits = greedy_with_logits(session, prompt, tokens)
        theirs, their_logits = torch_greedy(rebuilt.model, prompt, tokens)
        if ours != theirs:
            raise ParityError(
                f"rebuilt model's greedy tokens differ from the committed graph: {theirs} vs {ours}"
            )
        worst = max(worst, max_diff(our_logits, their_logits))
    if worst > tolerance:
        raise ParityError(f"rebuilt model's logits differ from the committed graph by {worst:.3g}")
    return worst
