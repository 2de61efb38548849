"""The HF llama checkpoint rebuilt from an artifact alone: same weights as the training run's export,
and transformers reproduces the ONNX model's greedy tokens and logits (tiny fixtures and the committed
shakespeare-gpt)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from safetensors.numpy import load_file

from harness.tiny_models import build_tiny_model, make_tiny_model_dir, tiny_tokenizer
from training.export import export_hf
from training.export.artifact import export_model
from training.export.hf_from_onnx import hf_from_artifact
from training.export.kv_quant import strip_kv_quantization
from training.export.ort_decoder import greedy_with_logits, make_session
from training.export.parity import TOLERANCE
from training.tokenizer import save_tokenizer

COMMITTED = Path("exported_models/shakespeare-gpt")
NEW_TOKENS = 24


def transformers_greedy(folder: Path, prompt: list[int], n_new: int) -> tuple[list[int], np.ndarray]:
    """HF generate's greedy tokens and the logits each was chosen from [n_new, vocab] (no EOS stop)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=n_new,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
            eos_token_id=None,
        )
    return out.sequences[0, len(prompt) :].tolist(), torch.stack(out.logits)[:, 0].numpy()


def assert_same_greedy(artifact: Path, folder: Path, prompts: list[list[int]], n_new: int) -> None:
    """An int8-cache graph is compared through its float32-cache build: the checkpoint holds the
    weights, and the cache's rounding is tested against that build in test_reexport.py."""
    session = make_session(strip_kv_quantization(onnx.load(str(artifact / "model.onnx"))))
    for prompt in prompts:
        ours, our_logits = greedy_with_logits(session, prompt, n_new)
        theirs, their_logits = transformers_greedy(folder, prompt, n_new)
        assert theirs == ours, f"prompt {prompt[:8]}...: transformers {theirs} vs ONNX {ours}"
        assert np.abs(their_logits - our_logits).max() <= TOLERANCE


def tiny_prompts(vocab_size: int) -> list[list[int]]:
    rng = np.random.default_rng(12)
    return [[1, 5, 9], rng.integers(4, vocab_size, size=40).tolist()]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"), "llama", seed=3)


def test_rebuilt_checkpoint_equals_the_training_runs_export(tiny_llama: Path, tmp_path: Path) -> None:
    from_run = export_hf(tiny_llama.parent / "run", tmp_path / "from-run")
    rebuilt = hf_from_artifact(tiny_llama, tmp_path / "from-artifact")
    theirs, ours = load_file(from_run / "model.safetensors"), load_file(rebuilt / "model.safetensors")
    assert sorted(ours) == sorted(theirs)
    for name, tensor in theirs.items():
        assert np.array_equal(ours[name], tensor), name
    for file in ("config.json", "generation_config.json", "tokenizer_config.json"):
        assert json.loads((rebuilt / file).read_text()) == json.loads((from_run / file).read_text()), file
    assert (rebuilt / "tokenizer.json").read_bytes() == (tiny_llama / "tokenizer.json").read_bytes()


def export_variant(root: Path, **overrides: object) -> Path:
    """A tiny llama artifact exported with `weights` and model `overrides` (e.g. an unfused head size)."""
    weights = str(overrides.pop("weights", "float32"))
    model, _ = build_tiny_model("llama", seed=4, **overrides)
    save_tokenizer(tiny_tokenizer(), root / "tokenizer.json")
    return export_model(model, root / "tokenizer.json", root / "model", "tiny-llama", weights=weights)


@pytest.mark.parametrize(
    "variant",
    [{}, {"weights": "float16"}, {"d_model": 32, "tie_embeddings": False}],
    ids=["float32", "float16-storage", "unfused-rotary-untied-head"],
)
def test_transformers_reproduces_the_onnx_greedy_run(tmp_path: Path, variant: dict[str, object]) -> None:
    artifact = export_variant(tmp_path, **variant)
    folder = hf_from_artifact(artifact, tmp_path / "hf")
    assert_same_greedy(artifact, folder, tiny_prompts(tiny_tokenizer().get_vocab_size()), NEW_TOKENS)


def test_committed_model_rebuilds_and_matches_its_onnx(tmp_path: Path) -> None:
    folder = hf_from_artifact(COMMITTED, tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["rope_theta"]) == (4, 192, 10000.0)
    rng = np.random.default_rng(0)
    prompts = [[1, 50, 60, 70], rng.integers(4, config["vocab_size"], size=128).tolist()]
    assert_same_greedy(COMMITTED, folder, prompts, NEW_TOKENS)


def test_recurrent_artifacts_are_refused(tmp_path: Path) -> None:
    lstm = make_tiny_model_dir(tmp_path, "lstm")
    with pytest.raises(ValueError, match="only llama decoders"):
        hf_from_artifact(lstm, tmp_path / "hf")
