"""Export a finished training run folder (runs/<name>/) to an artifact folder.

The run folder is the only input: config.toml (resolved recipe), model_config.json, model.safetensors,
tokenizer.json and metrics.json; from them come the weights, the labels and the manifest's records.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from training.build import load_run_model
from training.data import REPO_ROOT
from training.export.artifact import export_model
from training.export.half_storage import round_weights_to_float16
from training.export.manifest import chat_section, preprocessing_section, training_section
from training.recipe import Recipe, load_recipe

CONFIGS_DIR = REPO_ROOT / "training" / "configs"

# metrics.json entries that describe the run rather than the model's quality.
_BOOKKEEPING = {"steps", "seconds", "final_eval_seconds", "best_step", "parameters", "threads"}


def quality_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar scores of metrics.json (validation loss, nats per char, accuracy...)."""
    return {
        key: value
        for key, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and key not in _BOOKKEEPING
    }


def repo_relative(path: str | Path) -> str:
    """A path inside the repository as seen from its root, so manifests do not leak one machine's layout."""
    resolved = Path(path).resolve()
    return (
        os.path.relpath(resolved, REPO_ROOT) if resolved.is_relative_to(REPO_ROOT.parent) else str(resolved)
    )


def recipe_source(run_dir: Path, name: str) -> str:
    """The recipe under training/configs that produced the run, else the run's own resolved config."""
    for candidate in sorted((REPO_ROOT / "training" / "configs").glob("*.toml")):
        try:
            if load_recipe(candidate).name == name:
                return repo_relative(candidate)
        except (ValueError, OSError):
            continue
    return repo_relative(run_dir / "config.toml")


def pretraining_record(model_config: dict[str, Any]) -> dict[str, Any] | None:
    """The run a fine-tune started from (`init_from`): its recipe, steps and seconds, so the manifest
    carries the whole training cost and not only the fine-tune's."""
    init_from = model_config.get("init_from")
    if not init_from:
        return None
    base = Path(init_from)
    base = base if base.is_absolute() else REPO_ROOT / base
    metrics_path = base / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    return {
        "config": recipe_source(base, load_recipe(base / "config.toml").name),
        "steps": metrics.get("steps"),
        "seconds": metrics.get("seconds"),
    }


def recipe_chat(recipe: Recipe, run_dir: Path) -> dict[str, Any] | None:
    """The manifest's `chat` from the recipe as it is now under training/configs (a template added
    after training still reaches a re-export), else from the run's own resolved recipe."""
    source = REPO_ROOT / recipe_source(run_dir, recipe.name)
    chat = load_recipe(source).chat if source.parent == CONFIGS_DIR else recipe.chat
    return chat_section(CONFIGS_DIR / chat.template if chat.template else None, chat.stop)


def classifier_preprocessing(recipe: Recipe, run_dir: Path, model_config: dict[str, Any]) -> dict[str, Any]:
    """The manifest's `preprocessing` of a classifier run: its recipe's input policy, the window
    stride resolved to tokens, and the pooling `training pooling` chose on selection folds, if any."""
    from training.evaluate import POOLING_FILE

    task = recipe.task
    max_tokens = task.max_tokens
    if model_config.get("context_length"):
        max_tokens = min(max_tokens, int(model_config["context_length"]))
    room = max_tokens - (1 if model_config.get("append_eos") else 0)
    chosen_path = run_dir / POOLING_FILE
    chosen = json.loads(chosen_path.read_text()) if chosen_path.exists() else None
    return preprocessing_section(
        max_tokens,
        task.truncation,
        task.long_documents,
        task.window_stride or room,
        chosen["pooling"] if chosen else task.pooling,
        {key: chosen[key] for key in ("selection_folds", "selection_accuracy", "documents")}
        if chosen
        else None,
    )


def export_run(run_dir: Path, out_dir: Path) -> Path:
    """Read a run folder, export its best weights with parity checks, and write `out_dir`.

    With `export_weights = "float16"` the weights are rounded first and the validation metric is
    computed again on the rounded weights, so the manifest scores exactly what is shipped.
    """
    from training.evaluate import evaluate_run

    run_dir = Path(run_dir)
    recipe = load_recipe(run_dir / "config.toml")
    model, model_config = load_run_model(run_dir)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    quality = quality_metrics(metrics)
    if recipe.export_weights == "float16":
        round_weights_to_float16(model)
        rounded = quality_metrics(evaluate_run(run_dir, model))
        trained = {f"float32_{key}": quality[key] for key in rounded if key in quality}
        quality = {**quality, **rounded, **trained}
    record = training_section(
        recipe_source(run_dir, recipe.name),
        [repo_relative(path) for path in metrics.get("data", [])],
        metrics.get("steps"),
        metrics.get("seconds"),
    )
    pretraining = pretraining_record(model_config)
    if pretraining is not None:
        record["pretraining"] = pretraining
        if record["seconds"] is not None and pretraining["seconds"] is not None:
            record["total_seconds"] = round(record["seconds"] + pretraining["seconds"], 2)
    return export_model(
        model,
        run_dir / "tokenizer.json",
        Path(out_dir),
        recipe.export_name or recipe.name,
        quality,
        record,
        architecture=model_config.get("preset") or None,
        labels=model_config.get("labels"),
        append_eos=model_config.get("append_eos"),
        weights=recipe.export_weights,
        chat=recipe_chat(recipe, run_dir),
        preprocessing=classifier_preprocessing(recipe, run_dir, model_config)
        if recipe.kind.endswith("_classifier")
        else None,
    )
