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
from training.export.manifest import training_section
from training.recipe import load_recipe

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


def export_run(run_dir: Path, out_dir: Path) -> Path:
    """Read a run folder, export its best weights with parity checks, and write `out_dir`."""
    run_dir = Path(run_dir)
    recipe = load_recipe(run_dir / "config.toml")
    model, model_config = load_run_model(run_dir)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    record = training_section(
        recipe_source(run_dir, recipe.name),
        [repo_relative(path) for path in metrics.get("data", [])],
        metrics.get("steps"),
        metrics.get("seconds"),
    )
    return export_model(
        model,
        run_dir / "tokenizer.json",
        Path(out_dir),
        recipe.export_name or recipe.name,
        quality_metrics(metrics),
        record,
        architecture=model_config.get("preset") or None,
        labels=model_config.get("labels"),
        append_eos=model_config.get("append_eos"),
    )
