"""One training loop for every model: the task supplies batches, loss and evaluation; this does the rest.

A run lives in `runs/<name>/`: config.toml (resolved recipe), tokenizer.json, model_config.json,
model.safetensors (best weights by periodic eval), metrics.json, loss_curve.png, and checkpoint/
(latest weights, optimizer, data position, RNG states) to resume from. The LR schedule and the
wall-clock budget are described in training/schedule.py; `max_minutes` bounds the loop including
its periodic evals, while the final full-validation eval comes after it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn
from tqdm import tqdm

from training.build import (
    build_model,
    load_run_model,
    read_model_config,
    resolve_model_config,
    write_model_config,
)
from training.checkpoint import (
    WEIGHTS_FILE,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    save_weights,
    seed_everything,
)
from training.data import REPO_ROOT, data_paths
from training.optim import configure_threads, make_optimizer
from training.plots import plot_run
from training.pretrained import load_pretrained
from training.recipe import Recipe, load_recipe, recipe_to_toml
from training.schedule import StepBudget, lr_at
from training.tasks import Task, improved, make_task, training_texts
from training.tokenizer import load_tokenizer, save_tokenizer, tokenizer_kind, train_tokenizer

DEFAULT_RUNS_DIR = REPO_ROOT / "runs"
CONFIG_FILE, TOKENIZER_FILE, METRICS_FILE, PLOT_FILE = (
    "config.toml",
    "tokenizer.json",
    "metrics.json",
    "loss_curve.png",
)
CHECKPOINT_DIR = "checkpoint"
# Budget keys that may change between an interrupted run and its resumption.
_RESUMABLE_CHANGES = {"max_steps", "max_minutes"}


def repo_path(path: str) -> Path:
    """Paths in recipes that point at runs or tokenizers are relative to the repository root."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else REPO_ROOT / candidate


@contextmanager
def stop_on_interrupt() -> Iterator[threading.Event]:
    """Turn Ctrl-C/SIGTERM into a flag the loop checks after a step, so it can checkpoint and exit."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: requested.set())
    try:
        yield requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def prepare_tokenizer(recipe: Recipe, run_dir: Path, resume: bool) -> tuple[Tokenizer, list[str]]:
    """Reuse the run's (on resume), the recipe's or the init_from run's tokenizer, else train one."""
    texts, labels = training_texts(recipe)
    if resume:
        return load_tokenizer(run_dir / TOKENIZER_FILE), labels
    source = recipe.tokenizer.path or (
        str(Path(recipe.model["init_from"]) / TOKENIZER_FILE) if recipe.model.get("init_from") else ""
    )
    if source:
        tokenizer = load_tokenizer(repo_path(source))
    else:
        tokenizer = train_tokenizer(recipe.tokenizer.kind, texts, recipe.tokenizer.vocab_size)
    save_tokenizer(tokenizer, run_dir / TOKENIZER_FILE)
    return tokenizer, labels


def _check_resumable(recipe: Recipe, run_dir: Path) -> None:
    saved = load_recipe(run_dir / CONFIG_FILE).to_dict()
    current = recipe.to_dict()
    for section in (saved, current):
        for key in _RESUMABLE_CHANGES:
            section["optim"].pop(key)
    if saved != current:
        raise ValueError(
            f"{run_dir} was started from a different recipe; only {_RESUMABLE_CHANGES} may change"
        )


def _resolved_model_section(recipe: Recipe) -> dict[str, Any]:
    section = dict(recipe.model)
    if section.get("init_from"):
        section["init_from"] = str(repo_path(section["init_from"]))
    return section


def _evaluate_and_keep_best(
    task: Task, model: nn.Module, run_dir: Path, progress: dict[str, Any], step: int, elapsed: float
) -> None:
    """Periodic eval; a new best writes model.safetensors, else the early-stopping count grows."""
    result = task.evaluate(model, full=False)
    progress["evals"].append({"step": step, "seconds": round(elapsed, 2), **result})
    if improved(task, result[task.metric], progress["best"]):
        progress.update(best=result[task.metric], best_step=step, stale_evals=0)
        save_weights(model, run_dir / WEIGHTS_FILE)
    else:
        progress["stale_evals"] += 1


def train(
    recipe: Recipe,
    runs_dir: Path = DEFAULT_RUNS_DIR,
    *,
    resume: bool = False,
    show_progress: bool = True,
    interrupt_at_step: int | None = None,
) -> dict[str, Any]:
    """Train `recipe` into `runs_dir/<name>` and return its metrics (or the partial state if stopped).

    `interrupt_at_step` stops exactly as Ctrl-C would: a checkpoint is written and `--resume`
    continues the same run bit for bit (tests use it; so can a user splitting a long run).
    """
    optim = recipe.optim
    threads = configure_threads(optim.threads)
    run_dir = runs_dir / recipe.name
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    if resume:
        if not checkpoint_dir.is_dir():
            raise FileNotFoundError(f"nothing to resume: {checkpoint_dir} does not exist")
        _check_resumable(recipe, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(recipe_to_toml(recipe))
    seed_everything(optim.seed)

    tokenizer, labels = prepare_tokenizer(recipe, run_dir, resume)
    if resume:
        model_config = read_model_config(run_dir)
    else:
        model_config = resolve_model_config(
            _resolved_model_section(recipe), tokenizer.get_vocab_size(), labels
        )
        write_model_config(run_dir, model_config)
    model = build_model(model_config["kind"], model_config)
    if model_config.get("init_from") and not resume:
        load_pretrained(model, Path(model_config["init_from"]))
    task = make_task(recipe, tokenizer, model_config)
    optimizer = make_optimizer(model, optim)

    progress: dict[str, Any] = {"step": 0, "seconds": 0.0, "best": None, "best_step": 0, "stale_evals": 0}
    progress.update(history=[], evals=[])
    if resume:
        state = load_checkpoint(checkpoint_dir, model)
        optimizer.load_state_dict(state["optimizer"])
        task.load_state_dict(state["task"])
        restore_rng_state(state["rng"])
        progress = state["progress"]

    def checkpoint() -> None:
        state = {"optimizer": optimizer.state_dict(), "task": task.state_dict(), "rng": capture_rng_state()}
        save_checkpoint(checkpoint_dir, model, {**state, "progress": progress})

    budget = StepBudget(optim.max_steps, optim.max_minutes * 60.0)
    params = [param for group in optimizer.param_groups for param in group["params"]]
    step, started = progress["step"], time.perf_counter() - progress["seconds"]
    stopped = "max_steps"
    bar = tqdm(total=optim.max_steps, initial=step, disable=not show_progress, desc=recipe.name, unit="step")
    with stop_on_interrupt() as interrupted:
        while not budget.finished(step, progress["seconds"]):
            lr = lr_at(
                step, budget.horizon(step, progress["seconds"]), optim.lr, optim.min_lr, optim.warmup_steps
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            loss = task.train_loss(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, optim.grad_clip)
            optimizer.step()
            step += 1
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"loss became {loss_value} at step {step}; lower the LR or clip harder"
                )
            progress.update(step=step, seconds=time.perf_counter() - started)
            if step % optim.log_every == 0 or step == 1:
                progress["history"].append(
                    {"step": step, "loss": loss_value, "lr": lr, "seconds": progress["seconds"]}
                )
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}")
            last = budget.finished(step, progress["seconds"])
            if step % optim.eval_every == 0 or last:
                _evaluate_and_keep_best(task, model, run_dir, progress, step, progress["seconds"])
                bar.write(f"step {step}: {task.metric} {progress['evals'][-1][task.metric]:.4f}")
                if task.early_stopping and progress["stale_evals"] >= recipe.task.patience:
                    stopped = "early_stopping"
                    break
            if interrupted.is_set() or step == interrupt_at_step:
                checkpoint()
                bar.close()
                return {"interrupted": True, **progress}
            if step % optim.checkpoint_every == 0:
                checkpoint()
    bar.close()
    if stopped != "early_stopping" and optim.max_minutes > 0 and step < optim.max_steps:
        stopped = "max_minutes"
    checkpoint()
    return finish_run(recipe, run_dir, task, progress, stopped, threads)


def finish_run(
    recipe: Recipe, run_dir: Path, task: Task, progress: dict[str, Any], stopped: str, threads: int
) -> dict[str, Any]:
    """Score the best weights on the full validation set; write metrics.json and the loss curve."""
    model, model_config = load_run_model(run_dir)
    eval_started = time.perf_counter()
    final = task.evaluate(model, full=True)
    tokenizer = load_tokenizer(run_dir / TOKENIZER_FILE)
    metrics = {
        "name": recipe.name,
        "export_name": recipe.export_name,
        "kind": model_config["kind"],
        "metric": task.metric,
        **final,
        "steps": progress["step"],
        "seconds": round(progress["seconds"], 2),
        "final_eval_seconds": round(time.perf_counter() - eval_started, 2),
        "best_step": progress["best_step"],
        "stopped": stopped,
        "parameters": sum(param.numel() for param in model.parameters()),
        "data_summary": task.data_summary(),
        "tokenizer": {"kind": tokenizer_kind(tokenizer), "vocab_size": tokenizer.get_vocab_size()},
        "labels": model_config.get("labels"),
        "data": data_paths(recipe.data),
        "config": CONFIG_FILE,
        "torch_version": torch.__version__.split("+")[0],
        "python_version": platform.python_version(),
        "threads": threads,
        "recipe": dataclasses.asdict(recipe.optim),
        "evals": progress["evals"],
        "history": progress["history"],
    }
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=1) + "\n")
    title = f"{recipe.name}: {task.metric} {final[task.metric]:.4f} after {progress['step']} steps"
    plot_run(progress["history"], progress["evals"], task.metric, title, run_dir / PLOT_FILE)
    return metrics


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
