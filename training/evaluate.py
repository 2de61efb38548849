"""Score a finished run from its own files: the full validation metric, or held-out folds.

Early stopping picks the best weights on the run's dev folds, so the dev accuracy is optimistic.
The polarity-v2 report figure is therefore measured once on folds (cv800-cv899) that the run never
saw: `python -m training heldout --run runs/polarity-gpt --folds 800-899`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from training.build import load_run_model, read_model_config
from training.data import parse_folds
from training.optim import configure_threads
from training.recipe import load_recipe
from training.tasks import make_task
from training.tokenizer import load_tokenizer

CONFIG_FILE, TOKENIZER_FILE = "config.toml", "tokenizer.json"


def evaluate_run(run_dir: Path, model: nn.Module | None = None) -> dict[str, float]:
    """Recompute the full validation metric of a finished run from its own files; `model` replaces
    the run's weights (the export scores the float16-rounded weights it ships this way)."""
    recipe = load_recipe(run_dir / CONFIG_FILE)
    configure_threads(recipe.optim.threads)
    if model is None:
        model, model_config = load_run_model(run_dir)
    else:  # the caller's weights: only the config is read, the run's weights stay on disk
        model_config = read_model_config(run_dir)
    task = make_task(recipe, load_tokenizer(run_dir / TOKENIZER_FILE), model_config)
    return {"metric": task.metric, **task.evaluate(model, full=True)}


def evaluate_heldout(run_dir: Path, folds: str) -> dict[str, float]:
    """Accuracy and loss of the run's best weights on `folds` of its folder corpus."""
    recipe = load_recipe(run_dir / CONFIG_FILE)
    if recipe.data.format != "folders":
        raise ValueError(f"{run_dir} reads {recipe.data.format!r} data; held-out folds need a folder corpus")
    seen = parse_folds(recipe.data.train_folds or None)
    wanted = parse_folds(folds) or frozenset()
    if seen is None or wanted & (seen | (parse_folds(recipe.data.dev_folds) or frozenset())):
        raise ValueError(f"folds {folds} overlap the folds {run_dir} was trained or selected on")
    configure_threads(recipe.optim.threads)
    heldout = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, dev_folds=folds))
    model, model_config = load_run_model(run_dir)
    task = make_task(heldout, load_tokenizer(run_dir / TOKENIZER_FILE), model_config)
    result = task.evaluate(model, full=True)
    count = sum(len(batch[2]) for batch in task.dev_batches)  # type: ignore[attr-defined]
    return {"heldout_accuracy": result["dev_accuracy"], "heldout_loss": result["dev_loss"], "examples": count}
