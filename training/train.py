"""One training loop for every model: the task supplies batches, loss and evaluation; this does the rest.

A run lives in `runs/<name>/`: config.toml (resolved recipe), tokenizer.json, model_config.json,
model.safetensors (best weights by periodic eval), metrics.json, loss_curve.png, and checkpoint/
(latest weights, optimizer, data position, RNG states) to resume from. The LR schedule and the
wall-clock budget are described in training/schedule.py; `max_minutes` bounds the loop including
its periodic evals, while the final full-validation eval comes after it.

Under torchrun the same loop runs on every rank with DistributedDataParallel (training/distributed.py):
the ranks share each global batch, sum their loss, vote on stopping and share the evaluations, and
rank 0 alone writes the run folder. The checkpoint does not depend on the number of ranks, so a run
saved with N ranks resumes with M.
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
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn
from tqdm import tqdm

from training.build import build_model, read_model_config, resolve_model_config, write_model_config
from training.checkpoint import (
    WEIGHTS_FILE,
    capture_rng_state,
    load_checkpoint,
    load_weights,
    restore_rng_state,
    save_checkpoint,
    save_weights,
    seed_everything,
)
from training.data import REPO_ROOT, data_paths
from training.distributed import Ranks, wrap_for_training
from training.evaluate import CONFIG_FILE, TOKENIZER_FILE
from training.optim import configure_threads, make_optimizer
from training.pretrained import load_pretrained
from training.recipe import Recipe, load_recipe, recipe_to_toml
from training.schedule import StepBudget, lr_at
from training.tasks import Task, improved, make_task, training_texts
from training.tokenizer import load_tokenizer, save_tokenizer, tokenizer_kind, train_tokenizer

DEFAULT_RUNS_DIR = REPO_ROOT / "runs"
METRICS_FILE, PLOT_FILE = "metrics.json", "loss_curve.png"
CHECKPOINT_DIR = "checkpoint"
# Keys that may change between an interrupted run and its resumption: the budget, and how the work is
# spread (threads, micro-batches), which changes no number the run computes.
_RESUMABLE_CHANGES = {"max_steps", "max_minutes", "threads", "micro_batch_size"}


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


def prepare_run_dir(recipe: Recipe, run_dir: Path, resume: bool) -> tuple[str, dict[str, Any]]:
    """Rank 0's set-up: check a resumption, write config.toml, the tokenizer and model_config.json.

    Returns (tokenizer JSON, model config), which the other ranks receive instead of reading files,
    so only rank 0 needs to see the run folder."""
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    if resume:
        if not checkpoint_dir.is_dir():
            raise FileNotFoundError(f"nothing to resume: {checkpoint_dir} does not exist")
        _check_resumable(recipe, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(recipe_to_toml(recipe))
    tokenizer, labels = prepare_tokenizer(recipe, run_dir, resume)
    if resume:
        model_config = read_model_config(run_dir)
    else:
        model_config = resolve_model_config(
            _resolved_model_section(recipe), tokenizer.get_vocab_size(), labels
        )
        write_model_config(run_dir, model_config)
    return tokenizer.to_str(), model_config


def _evaluate_and_keep_best(
    task: Task,
    model: nn.Module,
    ranks: Ranks,
    run_dir: Path,
    progress: dict[str, Any],
    step: int,
    elapsed: float,
) -> None:
    """Periodic eval; a new best writes model.safetensors, else the early-stopping count grows.

    Rank 0's result decides for every rank, so all of them stop at the same step."""
    result = ranks.broadcast(task.evaluate(model, full=False))
    progress["evals"].append({"step": step, "seconds": round(elapsed, 2), **result})
    if improved(task, result[task.metric], progress["best"]):
        progress.update(best=result[task.metric], best_step=step, stale_evals=0)
        if ranks.is_main:
            save_weights(model, run_dir / WEIGHTS_FILE)
    else:
        progress["stale_evals"] += 1


def _restore_rng(saved: dict[str, Any] | list[dict[str, Any]], ranks: Ranks, seed: int, step: int) -> None:
    """Each rank takes back its own RNG state; a rank the saved run did not have is seeded afresh."""
    per_rank = saved if isinstance(saved, list) else [saved]  # a dict: written before ranks existed
    if ranks.rank < len(per_rank):
        restore_rng_state(per_rank[ranks.rank])
    else:
        seed_everything(seed + ranks.rank + 1_000_003 * step)


def _gradient_sync(trained: nn.Module, last_part: bool) -> AbstractContextManager[Any]:
    """DDP all-reduces gradients on the last micro-batch of a step only; the others accumulate."""
    if last_part or not isinstance(trained, nn.parallel.DistributedDataParallel):
        return nullcontext()
    return trained.no_sync()


def train(
    recipe: Recipe,
    runs_dir: Path = DEFAULT_RUNS_DIR,
    *,
    resume: bool = False,
    show_progress: bool = True,
    interrupt_at_step: int | None = None,
    ranks: Ranks | None = None,
) -> dict[str, Any]:
    """Train `recipe` into `runs_dir/<name>` and return its metrics (or the partial state if stopped).

    `interrupt_at_step` stops exactly as Ctrl-C would: a checkpoint is written and `--resume`
    continues the same run bit for bit (tests use it; so can a user splitting a long run).
    `ranks` is this process's place among torchrun's ranks (training/distributed.py); without it
    the run is a single process on the CPU.
    """
    ranks = ranks or Ranks()
    optim = recipe.optim
    ranks.check_can_share(optim.batch_size, "rows (batch_size)")
    threads = configure_threads(optim.threads, ranks.local_world_size)
    run_dir = runs_dir / recipe.name
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    tokenizer_json, model_config = ranks.from_main(lambda: prepare_run_dir(recipe, run_dir, resume))
    tokenizer = Tokenizer.from_str(tokenizer_json)
    seed_everything(optim.seed + ranks.rank)  # dropout differs per rank; DDP gives all rank 0's weights

    model = build_model(model_config["kind"], model_config)
    if model_config.get("init_from") and not resume and ranks.is_main:
        load_pretrained(model, Path(model_config["init_from"]))
    task = make_task(recipe, tokenizer, model_config, ranks)
    model.to(ranks.device)
    optimizer = make_optimizer(model, optim)

    progress: dict[str, Any] = {"step": 0, "seconds": 0.0, "best": None, "best_step": 0, "stale_evals": 0}
    progress.update(history=[], evals=[])
    if resume:
        state = ranks.from_main(lambda: load_checkpoint(checkpoint_dir, model))
        optimizer.load_state_dict(state["optimizer"])
        task.load_state_dict(state["task"])
        progress = state["progress"]
        _restore_rng(state["rng"], ranks, optim.seed, progress["step"])
    ranks.wait_for_all()  # data loading took each rank its own time; the loop's collectives are strict
    trained = wrap_for_training(model, ranks, task.every_parameter_trained)

    def checkpoint() -> None:
        """Every rank contributes its data position and RNG state; rank 0 writes them."""
        state = {"optimizer": optimizer.state_dict(), "task": task.state_dict()}
        state["rng"] = ranks.gather(capture_rng_state())
        if ranks.is_main:
            save_checkpoint(checkpoint_dir, model, {**state, "progress": progress})

    budget = StepBudget(optim.max_steps, optim.max_minutes * 60.0)
    params = [param for group in optimizer.param_groups for param in group["params"]]
    step, started = progress["step"], time.perf_counter() - progress["seconds"]
    stopped = "max_steps"
    bar = tqdm(
        total=optim.max_steps,
        initial=step,
        disable=not (show_progress and ranks.is_main),
        desc=recipe.name,
        unit="step",
    )
    with stop_on_interrupt() as interrupted:
        while not budget.finished(step, progress["seconds"]):
            lr = lr_at(
                step, budget.horizon(step, progress["seconds"]), optim.lr, optim.min_lr, optim.warmup_steps
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            trained.train()
            optimizer.zero_grad(set_to_none=True)
            parts = task.next_parts()
            loss_share = torch.zeros((), device=ranks.device)
            for index, part in enumerate(parts):
                with _gradient_sync(trained, index == len(parts) - 1), ranks.talking(f"step {step + 1}"):
                    loss = task.part_loss(trained, part)
                    # DDP averages gradients over ranks; the shares must add up instead.
                    (loss * ranks.world_size).backward()
                loss_share += loss.detach()
            if optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, optim.grad_clip)
            optimizer.step()
            step += 1
            own_seconds = time.perf_counter() - started
            loss_value, seconds, stop_votes = ranks.sum(
                [loss_share.item(), own_seconds if ranks.is_main else 0.0, float(interrupted.is_set())]
            )  # rank 0's clock decides the time budget for all
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"loss became {loss_value} at step {step}; lower the LR or clip harder"
                )
            progress.update(step=step, seconds=seconds)
            if step % optim.log_every == 0 or step == 1:
                progress["history"].append({"step": step, "loss": loss_value, "lr": lr, "seconds": seconds})
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}")
            last = budget.finished(step, progress["seconds"])
            if step % optim.eval_every == 0 or last:
                _evaluate_and_keep_best(task, model, ranks, run_dir, progress, step, progress["seconds"])
                if ranks.is_main and show_progress:
                    bar.write(f"step {step}: {task.metric} {progress['evals'][-1][task.metric]:.4f}")
                if task.early_stopping and progress["stale_evals"] >= recipe.task.patience:
                    stopped = "early_stopping"
                    break
            if stop_votes > 0 or step == interrupt_at_step:
                checkpoint()
                bar.close()
                return {"interrupted": True, **progress}
            if step % optim.checkpoint_every == 0:
                checkpoint()
    bar.close()
    if stopped != "early_stopping" and optim.max_minutes > 0 and step < optim.max_steps:
        stopped = "max_minutes"
    checkpoint()
    about = {
        "kind": model_config["kind"],
        "tokenizer": {"kind": tokenizer_kind(tokenizer), "vocab_size": tokenizer.get_vocab_size()},
        "labels": model_config.get("labels"),
        "threads": threads,
    }
    return finish_run(recipe, run_dir, task, model, ranks, progress, stopped, about)


def finish_run(
    recipe: Recipe,
    run_dir: Path,
    task: Task,
    model: nn.Module,
    ranks: Ranks,
    progress: dict[str, Any],
    stopped: str,
    about: dict[str, Any],
) -> dict[str, Any]:
    """Score the best weights on the full validation set; rank 0 writes metrics.json and the curve.

    `about` holds the run's descriptive fields (kind, tokenizer, labels, threads)."""
    if ranks.is_main:
        load_weights(model, run_dir / WEIGHTS_FILE)
    ranks.share_weights(model)
    eval_started = time.perf_counter()
    final = ranks.broadcast(task.evaluate(model, full=True))
    metrics = {
        "name": recipe.name,
        "export_name": recipe.export_name,
        "kind": about["kind"],
        "metric": task.metric,
        **final,
        "steps": progress["step"],
        "seconds": round(progress["seconds"], 2),
        "final_eval_seconds": round(time.perf_counter() - eval_started, 2),
        "best_step": progress["best_step"],
        "stopped": stopped,
        "parameters": sum(param.numel() for param in model.parameters()),
        "data_summary": task.data_summary(),
        "tokenizer": about["tokenizer"],
        "labels": about["labels"],
        "data": data_paths(recipe.data),
        "config": CONFIG_FILE,
        "torch_version": torch.__version__.split("+")[0],
        "python_version": platform.python_version(),
        "threads": about["threads"],
        "world_size": ranks.world_size,
        "device": ranks.device.type,
        "recipe": dataclasses.asdict(recipe.optim),
        "evals": progress["evals"],
        "history": progress["history"],
    }
    if ranks.is_main:
        from training.plots import plot_run  # matplotlib: imported by the one rank that draws

        (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=1) + "\n")
        title = f"{recipe.name}: {task.metric} {final[task.metric]:.4f} after {progress['step']} steps"
        plot_run(progress["history"], progress["evals"], task.metric, title, run_dir / PLOT_FILE)
    return metrics
