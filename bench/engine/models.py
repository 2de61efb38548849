"""The model folders a benchmark run uses: the real defaults when exported, a stand-in otherwise,
plus the Hugging Face checkpoint of the same weights for the peers that need it, rebuilt from the
artifact itself so that a fresh clone (no training run) compares every system."""

from __future__ import annotations

import json
import logging
import tomllib
from pathlib import Path

from training.export.hf_from_onnx import hf_from_artifact

log = logging.getLogger(__name__)

RECIPE = Path("training/configs/shakespeare-gpt.toml")
DATA = Path("../shared/data/tinyshakespeare/input.txt")


def stand_in_transformer(work_dir: Path) -> Path:
    """A randomly initialised model of the shakespeare-gpt recipe's shape, exported like the real one.

    Returns the artifact folder. Speed does not depend on the weights' values, so
    ratios measured on it hold for the trained model of the same shape.
    """
    import torch

    from harness.tiny_models import scale_init
    from training.build import build_model, resolve_model_config, write_model_config
    from training.checkpoint import save_weights
    from training.export import export_run
    from training.recipe import recipe_from_dict, recipe_to_toml
    from training.tokenizer import save_tokenizer, train_tokenizer

    recipe = tomllib.loads(RECIPE.read_text())
    run_dir = work_dir / "stand-in-run"
    artifact = work_dir / "stand-in-gpt"
    if (artifact / "manifest.json").exists():
        return artifact
    run_dir.mkdir(parents=True, exist_ok=True)
    text = DATA.read_text()[:300_000]
    tokenizer = train_tokenizer(recipe["tokenizer"]["kind"], [text], recipe["tokenizer"].get("vocab_size"))
    save_tokenizer(tokenizer, run_dir / "tokenizer.json")
    config = resolve_model_config(recipe["model"], tokenizer.get_vocab_size())
    torch.manual_seed(0)
    model = build_model(config["kind"], config)
    scale_init(model, 0)
    save_weights(model, run_dir / "model.safetensors")
    write_model_config(run_dir, config)
    stand_in = recipe_from_dict({"name": "stand-in-gpt", "model": dict(recipe["model"])})
    (run_dir / "config.toml").write_text(recipe_to_toml(stand_in))
    (run_dir / "metrics.json").write_text(
        '{"name": "stand-in-gpt", "metric": "none", "steps": 0, "data": []}\n'
    )
    return export_run(run_dir, artifact)


def peer_folder(artifact: Path, work_dir: Path) -> Path:
    """Scratch for the peers' builds of this artifact (HF checkpoint, genai and Optimum models), named
    by the ONNX file's digest so that a changed model never reuses another model's builds."""
    manifest = json.loads((artifact / "manifest.json").read_text())
    digest = manifest["files"][manifest["onnx"]["file"]]["sha256"]
    return work_dir / f"peers-{manifest['name']}-{digest[:12]}"


def hf_checkpoint(artifact: Path, out_dir: Path, positions: int) -> Path:
    """The transformers-loadable llama folder of `artifact`'s weights (built once into `out_dir`).

    `max_position_embeddings` is raised to `positions` (the ONNX cache length) so the peers may run
    the same 128 + 256 tokens as the engine; rotary positions are computed, not learned, so the
    weights mean the same thing past the training context.
    """
    if not (out_dir / "config.json").exists():
        hf_from_artifact(artifact, out_dir)
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text())
    if config.get("max_position_embeddings", 0) < positions:
        config["max_position_embeddings"] = positions
        config_path.write_text(json.dumps(config, indent=2) + "\n")
    return out_dir
