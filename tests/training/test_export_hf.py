"""Hugging Face export: transformers loads it offline and agrees with us; genai builds the llama one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.tiny_models import build_tiny_model, make_tiny_run, tiny_prompt
from training.build import load_run_model
from training.export.hf import export_hf
from training.export.parity import TOLERANCE
from training.export.torch_reference import greedy, lm_logits
from training.tokenizer import EOS_ID

PRESETS = ("gpt2", "llama")
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def hf_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """preset → (run folder, HF folder) of a tiny seeded model."""
    exports = {}
    for preset in PRESETS:
        root = tmp_path_factory.mktemp(f"hf-{preset}")
        run_dir = make_tiny_run(root, preset, seed=6)
        exports[preset] = run_dir, export_hf(run_dir, root / "hf")
    return exports


@pytest.mark.parametrize("preset", PRESETS)
def test_transformers_loads_the_export_offline_and_reproduces_our_logits(
    hf_exports, preset, monkeypatch
) -> None:
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_dir, folder = hf_exports[preset]
    hf_model = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert type(hf_model).__name__ == {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}[preset]
    ours, _ = load_run_model(run_dir)
    ids = (tiny_prompt() * 8)[: ours.config.context_length]
    with torch.no_grad():
        theirs = hf_model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(theirs - lm_logits(ours, ids)).max() <= TOLERANCE


@pytest.mark.parametrize("preset", PRESETS)
def test_hf_tokenizer_keeps_our_ids_and_special_tokens(hf_exports, preset, monkeypatch) -> None:
    from transformers import AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(hf_exports[preset][1])
    assert tokenizer("To be, or not", add_special_tokens=False).input_ids == tiny_prompt("To be, or not")
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)


@pytest.mark.slow
def test_genai_builder_builds_the_llama_export_and_generates_our_greedy_tokens(
    hf_exports, tmp_path: Path
) -> None:
    import onnxruntime_genai as og

    run_dir, folder = hf_exports["llama"]
    command = [
        sys.executable,
        "-m",
        "onnxruntime_genai.models.builder",
        "-i",
        str(folder),
        "-o",
        str(tmp_path / "genai"),
    ]
    command += ["-p", "fp32", "-e", "cpu", "-c", str(tmp_path / "cache")]
    built = subprocess.run(command, env=OFFLINE, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    assert (
        json.loads((tmp_path / "genai" / "genai_config.json").read_text())["model"]["eos_token_id"] == EOS_ID
    )
    prompt = tiny_prompt()
    model = og.Model(str(tmp_path / "genai"))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt) + 50)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    while not generator.is_done():
        generator.generate_next_token()
    generated = [int(t) for t in generator.get_sequence(0)[len(prompt) :]]
    expected = greedy(load_run_model(run_dir)[0], prompt, 50)
    if EOS_ID in expected:  # genai stops at EOS
        expected = expected[: expected.index(EOS_ID) + 1]
    assert generated == expected


def test_hf_export_refuses_a_model_no_transformers_class_computes() -> None:
    model, _ = build_tiny_model("gpt2", positions="sinusoidal")
    with pytest.raises(ValueError, match="no transformers class"):
        export_hf(model, Path("/nonexistent"))
