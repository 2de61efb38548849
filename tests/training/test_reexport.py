"""Re-export from an artifact alone: the torch model rebuilt from model.onnx, the int8-cache CPU graph
against its float32-cache build, the float16 CUDA variant against torch, and the manifest that records
them (a tiny llama end to end, and the committed shakespeare-gpt's graphs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from harness.tiny_models import MODEL_SECTIONS, TINY_TEXT, tiny_tokenizer
from training.build import build_model, resolve_model_config
from training.export.artifact import export_model
from training.export.fp16_variant import FLOAT16_FILE, FLOAT16_TOLERANCE
from training.export.graph_scoring import TextStream, graph_nats_per_char
from training.export.hf_from_onnx import llama_from_onnx
from training.export.kv_quant import INT8_CACHE_TOLERANCE, cache_logit_diff, strip_kv_quantization
from training.export.manifest import training_section
from training.export.ort_decoder import InPlaceDecoder, make_session
from training.export.parity import TOLERANCE
from training.export.rebuild import check_rebuild, fixed_prompts, rebuild_artifact
from training.export.reexport import ReexportOptions, float32_cache_artifact, reexport
from training.metrics import transformer_stream_nats
from training.models.transformer import TransformerLM
from training.recipe import recipe_from_dict, recipe_to_toml
from training.tokenizer import save_tokenizer

COMMITTED = Path("exported_models/shakespeare-gpt")


@pytest.fixture(scope="module")
def tiny_model() -> TransformerLM:
    """A tiny llama at training's own initialisation: activations of a trained model's size (the
    harness's gained-up weights make attention so sharp that any cache rounding flips it)."""
    tokenizer = tiny_tokenizer()
    config = resolve_model_config(MODEL_SECTIONS["llama"], tokenizer.get_vocab_size())
    torch.manual_seed(5)
    model = build_model("transformer_lm", config)
    assert isinstance(model, TransformerLM)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory, tiny_model: TransformerLM) -> Path:
    """The tiny llama exported, its manifest naming a recipe with real (tiny) training text."""
    root = tmp_path_factory.mktemp("reexport")
    text = root / "text.txt"
    text.write_text(TINY_TEXT * 12, encoding="utf-8")
    recipe = recipe_from_dict(
        {
            "name": "tiny-llama",
            "data": {"path": str(text), "train_fraction": 0.7},
            "model": MODEL_SECTIONS["llama"],
        }
    )
    (root / "tiny.toml").write_text(recipe_to_toml(recipe))
    save_tokenizer(tiny_tokenizer(), root / "tokenizer.json")
    record = training_section(str(root / "tiny.toml"), [], None, None)
    return export_model(
        tiny_model, root / "tokenizer.json", root / "model", "tiny-llama", {}, record, max_cache_len=256
    )


@pytest.fixture(scope="module")
def reexported(tiny_artifact: Path) -> Path:
    return reexport(
        tiny_artifact,
        tiny_artifact.parent / "again",
        ReexportOptions(kv_cache="int8", threads=1, greedy_prompts=3, greedy_tokens=16),
    )


def test_rebuilt_model_has_the_trained_weights(tiny_artifact: Path, tiny_model: TransformerLM) -> None:
    rebuilt = rebuild_artifact(tiny_artifact)
    trained = tiny_model.state_dict()
    for name, tensor in rebuilt.model.state_dict().items():
        assert torch.equal(tensor, trained[name]), name
    assert check_rebuild(rebuilt, tokens=8) <= TOLERANCE


def test_graph_scoring_reproduces_training_metric(tiny_artifact: Path) -> None:
    rebuilt = rebuild_artifact(tiny_artifact)
    tokens = np.random.default_rng(3).integers(4, rebuilt.model.config.vocab_size, size=300)
    stream = TextStream(tokens, chars=500)
    nats, _ = transformer_stream_nats(
        rebuilt.model, torch.from_numpy(tokens), rebuilt.model.config.context_length
    )
    ours = graph_nats_per_char(make_session(tiny_artifact / "model.onnx"), stream, 128, batch=2)
    assert ours == pytest.approx(nats / 500, abs=1e-4)


def test_reexported_manifest_describes_int8_cpu_and_float16_cuda(reexported: Path) -> None:
    manifest = json.loads((reexported / "manifest.json").read_text())
    cache = manifest["onnx"]["kv_cache"]
    assert cache["dtype"] == "int8" and cache["quant_type"] == "PER_CHANNEL"
    assert len(cache["scales"]["key"]) == cache["num_layers"]
    assert len(cache["scales"]["key"][0]) == cache["kv_heads"] * cache["head_dim"]
    assert manifest["onnx"]["inputs"]["past_key_values.0.key"]["dtype"] == "int8"
    assert manifest["onnx"]["outputs"]["present.1.value"]["dtype"] == "int8"
    assert manifest["onnx"]["fusions"] == ["SkipSimplifiedLayerNormalization"]
    assert manifest["variants"]["cpu"]["file"] == "model.onnx"
    cuda = manifest["variants"]["cuda"]
    assert cuda["file"] == FLOAT16_FILE and FLOAT16_FILE in manifest["files"]
    assert cuda["inputs"]["past_key_values.0.key"]["dtype"] == "float16"
    assert cuda["outputs"]["logits"]["dtype"] == "float32"
    assert cuda["parity"]["max_abs_logit_diff"] <= FLOAT16_TOLERANCE
    metrics = manifest["metrics"]
    assert metrics["val_nats_per_char"] == metrics["int8_cache_val_nats_per_char"]
    assert set(metrics["weight_candidates"]) == {"int4-matmulnbits", "int8-matmulnbits", "int8-dynamic"}
    recorded = metrics["int8_cache_parity"]
    assert 0 < recorded["max_abs_logit_diff"] <= INT8_CACHE_TOLERANCE * recorded["max_abs_logit"]


def test_int8_cache_in_place_matches_float32_cache(reexported: Path) -> None:
    graph = onnx.load(str(reexported / "model.onnx"))
    int8, float32 = make_session(graph), make_session(strip_kv_quantization(graph))
    prompts = fixed_prompts(int(int8.get_outputs()[0].shape[-1]), 3)
    diff, largest = cache_logit_diff(int8, float32, prompts)
    assert diff <= INT8_CACHE_TOLERANCE * largest
    decoder = InPlaceDecoder(int8, rows=1)
    decoder.step(0, [prompts[0]])
    # past and present are one buffer: the graph wrote the prompt's keys into it as int8.
    assert decoder.keys[0].dtype == np.int8 and np.any(decoder.keys[0][0, :, : len(prompts[0])])


def test_reexport_is_repeatable_from_its_own_output(reexported: Path) -> None:
    rebuilt = rebuild_artifact(reexported)
    assert check_rebuild(rebuilt, tokens=8) <= TOLERANCE


def test_float32_cache_artifact_and_hf_rebuild_read_the_new_graph(reexported: Path, tmp_path: Path) -> None:
    derived = float32_cache_artifact(reexported, tmp_path / "f32")
    manifest = json.loads((derived / "manifest.json").read_text())
    assert manifest["onnx"]["kv_cache"]["dtype"] == "float32"
    assert manifest["onnx"]["inputs"]["past_key_values.0.key"]["dtype"] == "float32"
    assert "variants" not in manifest
    reference = rebuild_artifact(reexported).model
    session = make_session(derived / "model.onnx")
    prompt = fixed_prompts(reference.config.vocab_size, 2)[1]
    logits = InPlaceDecoder(session, rows=1).step(0, [prompt])[0]
    with torch.no_grad():
        expected = reference(torch.tensor([prompt]))[0].numpy()
    assert np.abs(logits - expected).max() <= TOLERANCE
    _, hf_state = llama_from_onnx(
        onnx.load(str(reexported / "model.onnx")), json.loads((reexported / "manifest.json").read_text())
    )
    assert "model.layers.0.self_attn.q_proj.weight" in hf_state


@pytest.mark.skipif(not (COMMITTED / "manifest.json").exists(), reason="no committed shakespeare-gpt")
def test_committed_model_cache_parity_and_recorded_figures() -> None:
    manifest = json.loads((COMMITTED / "manifest.json").read_text())
    graph = onnx.load(str(COMMITTED / manifest["onnx"]["file"]))
    session = make_session(graph)
    if manifest["onnx"]["kv_cache"].get("dtype") == "int8":
        prompts = fixed_prompts(manifest["tokenizer"]["vocab_size"], 2)
        reference = make_session(strip_kv_quantization(graph))
        diff, largest = cache_logit_diff(session, reference, prompts, steps=8)
        assert diff <= INT8_CACHE_TOLERANCE * largest
        metrics = manifest["metrics"]
        assert metrics["int8_cache_val_nats_per_char"] - metrics["float32_cache_val_nats_per_char"] <= 0.01
