"""The model folders a benchmark run uses: the real defaults when exported, a stand-in otherwise,
plus the Hugging Face export of the same weights for the peers that need it."""

from __future__ import annotations

import json
import logging
import tomllib
from pathlib import Path

log = logging.getLogger(__name__)

RECIPE = Path("training/configs/shakespeare-gpt.toml")
DATA = Path("../shared/data/tinyshakespeare/input.txt")


def stand_in_transformer(work_dir: Path) -> tuple[Path, Path]:
    """A randomly initialised model of the shakespeare-gpt recipe's shape, exported like the real one.

    Returns (artifact folder, training run folder). Speed does not depend on the weights' values, so
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
        return artifact, run_dir
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
    return export_run(run_dir, artifact), run_dir


def hf_export(run_dir: Path | None, artifact: Path, out_dir: Path, positions: int) -> Path | str:
    """The transformers-loadable folder of the same weights (training's `export_hf`), or why not.

    `max_position_embeddings` is raised to `positions` (the ONNX cache length) so the peers may run
    the same 128 + 256 tokens as the engine; rotary positions are computed, not learned, so the
    weights mean the same thing past the training context.
    """
    if not (out_dir / "config.json").exists():
        try:
            from training.export.hf import export_hf
        except ImportError:
            return "training.export has no export_hf: no HF folder for genai, transformers and Optimum"
        candidates = (run_dir, _run_from_manifest(artifact))
        sources = [p for p in candidates if p and (p / "model_config.json").exists()]
        if not sources:
            return f"no training run folder found for {artifact}; pass --hf-dir"
        try:
            export_hf(sources[0], out_dir)
        except Exception as exc:  # report and go on with the other measurements
            return f"export_hf failed: {exc}"
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text())
    if config.get("model_type") == "llama" and config.get("max_position_embeddings", 0) < positions:
        config["max_position_embeddings"] = positions
        config_path.write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


def _run_from_manifest(artifact: Path) -> Path | None:
    """runs/<recipe stem>, where `python -m training train` leaves the run the artifact came from."""
    manifest = json.loads((artifact / "manifest.json").read_text())
    config = (manifest.get("training") or {}).get("config")
    if not config:
        return None
    candidate = Path("runs") / Path(config).stem
    return candidate if candidate.exists() else None
