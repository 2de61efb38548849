"""Score a finished run from its own files: the full validation metric, or held-out folds.

Early stopping picks the best weights on the run's dev folds, so the dev accuracy is optimistic.
The polarity-v2 report figure is therefore measured once on folds (cv800-cv899) that the run never
saw: `python -m training heldout --run runs/polarity-gpt --folds 800-899`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from torch import nn

from training.build import load_run_model, read_model_config
from training.data import parse_folds, read_labelled_folders
from training.long_documents import POOLINGS, pool_log_probabilities
from training.metrics import window_log_probs
from training.optim import configure_threads
from training.recipe import Recipe, load_recipe
from training.tasks import classifier_windows, make_task
from training.tokenizer import PAD_ID, load_tokenizer

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


POOLING_FILE = "pooling.json"


def run_pooling(run_dir: Path) -> str:
    """The pooling the run serves with: the one `choose_pooling` recorded, else the recipe's."""
    chosen = Path(run_dir) / POOLING_FILE
    if chosen.exists():
        return str(json.loads(chosen.read_text())["pooling"])
    return load_recipe(Path(run_dir) / CONFIG_FILE).task.pooling


def _document_folds(recipe: Recipe) -> tuple[str, list[str], frozenset[int]]:
    """(folder corpus, classes, folds the run trained or selected on) of a run that read documents."""
    data = recipe.data
    if data.format == "folders":
        seen = (parse_folds(data.train_folds or None) or frozenset()) | (
            parse_folds(data.dev_folds) or frozenset()
        )
        return data.path, list(data.classes), seen
    if data.extra_train_folders:
        return (
            data.extra_train_folders,
            list(data.classes),
            parse_folds(data.extra_train_folds) or frozenset(),
        )
    raise ValueError("the run read no folder corpus of documents to score on other folds")


def document_window_log_probs(run_dir: Path, folds: str) -> tuple[list[list[list[float]]], list[int]]:
    """Each document's window log-probabilities on `folds` (never ones the run trained or selected on),
    with the documents' labels, under the run's preprocessing contract."""
    run_dir = Path(run_dir)
    recipe = load_recipe(run_dir / CONFIG_FILE)
    path, classes, seen = _document_folds(recipe)
    wanted = parse_folds(folds) or frozenset()
    if wanted & seen:
        raise ValueError(f"folds {folds} overlap the folds {run_dir} was trained or selected on")
    configure_threads(recipe.optim.threads)
    model, model_config = load_run_model(run_dir)
    tokenizer = load_tokenizer(run_dir / TOKENIZER_FILE)
    examples = read_labelled_folders(path, classes, wanted)
    documents = [classifier_windows(recipe, model_config, tokenizer, example.text) for example in examples]
    flat = [window for document in documents for window in document]
    rows = window_log_probs(model, flat, PAD_ID, recipe.task.eval_batch_size)
    grouped, at = [], 0
    for document in documents:
        grouped.append(rows[at : at + len(document)])
        at += len(document)
    return grouped, [example.label for example in examples]


def pooled_accuracy(grouped: list[list[list[float]]], labels: list[int], pooling: str) -> float:
    """Share of documents whose pooled log-probabilities put the true label first."""
    correct = 0
    for rows, label in zip(grouped, labels, strict=True):
        pooled = pool_log_probabilities(rows, pooling)
        correct += int(max(range(len(pooled)), key=pooled.__getitem__) == label)
    return correct / len(labels)


def choose_pooling(run_dir: Path, folds: str) -> dict[str, Any]:
    """Score every pooling on selection folds, keep the best (ties keep the recipe's), record it in
    the run folder; the export writes it into the manifest and the service pools by it."""
    grouped, labels = document_window_log_probs(run_dir, folds)
    recipe = load_recipe(Path(run_dir) / CONFIG_FILE)
    scores = {pooling: pooled_accuracy(grouped, labels, pooling) for pooling in POOLINGS}
    best = max(POOLINGS, key=lambda pooling: (scores[pooling], pooling == recipe.task.pooling))
    result = {
        "pooling": best,
        "selection_folds": folds,
        "selection_accuracy": scores,
        "documents": len(labels),
    }
    (Path(run_dir) / POOLING_FILE).write_text(json.dumps(result, indent=1) + "\n")
    return result


def evaluate_documents(run_dir: Path, folds: str) -> dict[str, Any]:
    """Held-out document accuracy with the run's windows and its recorded pooling."""
    grouped, labels = document_window_log_probs(run_dir, folds)
    pooling = run_pooling(run_dir)
    return {
        "heldout_accuracy": pooled_accuracy(grouped, labels, pooling),
        "pooling": pooling,
        "examples": len(labels),
    }
