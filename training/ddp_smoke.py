"""`make train-ddp-smoke`: the same tiny recipe trained by N ranks under torchrun and by one process.

Both runs see the same global batch at every step (the ranks split it), so their losses may differ
only by float rounding: the gradient of the batch is summed in another order. The report gives both
final losses, their relative difference, and the pace of each run (seconds per step after the
first), which on a small CPU says how much the all-reduce costs against the compute it splits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.data import REPO_ROOT
from training.recipe import recipe_from_dict, recipe_to_toml

SMOKE_TEXT = (
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles\n"
) * 40
TINY_LLAMA = {
    "kind": "transformer_lm",
    "preset": "llama",
    "context_length": 32,
    "n_layer": 2,
    "n_head": 2,
    "n_kv_head": 1,
    "d_model": 32,
    "d_ff": 64,
    "dropout": 0.0,
}
LAUNCH_TIMEOUT_S = 300.0


def tiny_recipe(folder: Path, name: str = "smoke", model: dict[str, Any] | None = None, **optim: Any) -> Path:
    """Write a tiny char-level LM recipe and its corpus into `folder`; return the recipe's path."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text(SMOKE_TEXT)
    settings = {
        "lr": 3e-3,
        "min_lr": 3e-4,
        "warmup_steps": 5,
        "batch_size": 8,
        "max_steps": 20,
        "eval_every": 1000,
        "checkpoint_every": 1000,
        "log_every": 1,
        **optim,
    }
    recipe = recipe_from_dict(
        {
            "name": name,
            "data": {"path": str(corpus)},
            "tokenizer": {"kind": "char"},
            "model": model or TINY_LLAMA,
            "optim": settings,
            "task": {"bptt": 16, "eval_tokens": 2048},
            "export": False,
        }
    )
    path = folder / f"{name}.toml"
    path.write_text(recipe_to_toml(recipe))
    return path


def train_command(config: Path, runs_dir: Path, ranks: int, *extra: str) -> list[str]:
    """`python -m training train` for one rank, torchrun (as `python -m torch.distributed.run`) for more."""
    args = ["-m", "training", "train", "--config", str(config), "--runs-dir", str(runs_dir), "--no-progress"]
    if ranks == 1:
        return [sys.executable, *args, *extra]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    return [*launcher, *args, *extra]


def launch_env(extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a launched run: this tree first on the path (then `extra_env`'s path)."""
    extra = dict(extra_env or {})
    path = os.pathsep.join(filter(None, [extra.pop("PYTHONPATH", ""), str(REPO_ROOT)]))
    return {**os.environ, **extra, "PYTHONPATH": path}


def launch(
    config: Path,
    runs_dir: Path,
    ranks: int,
    *extra: str,
    timeout: float = LAUNCH_TIMEOUT_S,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a training command from the repository root (so this tree's `training` is imported)."""
    return subprocess.run(
        train_command(config, runs_dir, ranks, *extra),
        cwd=REPO_ROOT,
        env=launch_env(extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class SmokeResult:
    """Final losses and paces of the N-rank and the 1-rank run."""

    ranks: int
    steps: int
    loss_ranks: float
    loss_single: float
    seconds_per_step_ranks: float
    seconds_per_step_single: float
    metric_ranks: float
    metric_single: float

    @property
    def relative_difference(self) -> float:
        return abs(self.loss_ranks - self.loss_single) / abs(self.loss_single)


def _pace(history: list[dict[str, Any]]) -> float:
    """Seconds per step after the first (which pays for warm-up and the first all-reduce set-up)."""
    first, last = history[0], history[-1]
    return (last["seconds"] - first["seconds"]) / max(1, last["step"] - first["step"])


def _metrics(runs_dir: Path, process: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    if process.returncode != 0:
        raise RuntimeError(f"training failed ({process.returncode}):\n{process.stdout}\n{process.stderr}")
    return json.loads((runs_dir / "smoke" / "metrics.json").read_text())


def run_smoke(
    work_dir: Path | None = None, ranks: int = 2, steps: int = 20, extra_env: dict[str, str] | None = None
) -> SmokeResult:
    """Train the tiny recipe with `ranks` ranks and with one process; compare the last losses.

    The runs are left in `work_dir/ranks` and `work_dir/single` when a folder is given."""
    with tempfile.TemporaryDirectory(prefix="ddp-smoke-") as scratch:
        folder = work_dir or Path(scratch)
        config = tiny_recipe(folder, max_steps=steps)
        several = _metrics(folder / "ranks", launch(config, folder / "ranks", ranks, extra_env=extra_env))
        single = _metrics(folder / "single", launch(config, folder / "single", 1, extra_env=extra_env))
    return SmokeResult(
        ranks=ranks,
        steps=steps,
        loss_ranks=several["history"][-1]["loss"],
        loss_single=single["history"][-1]["loss"],
        seconds_per_step_ranks=_pace(several["history"]),
        seconds_per_step_single=_pace(single["history"]),
        metric_ranks=several["val_nats_per_char"],
        metric_single=single["val_nats_per_char"],
    )


def report(result: SmokeResult) -> str:
    """The lines `make train-ddp-smoke` prints."""
    n = result.ranks
    return "\n".join(
        [
            f"tiny llama, global batch 8, {result.steps} steps",
            f"final loss, {n} ranks : {result.loss_ranks:.8f}",
            f"final loss, 1 rank  : {result.loss_single:.8f}",
            f"relative difference : {result.relative_difference:.2e}",
            f"val nats/char       : {result.metric_ranks:.6f} ({n} ranks), "
            f"{result.metric_single:.6f} (1 rank)",
            f"seconds per step    : {result.seconds_per_step_ranks * 1000:.1f} ms ({n} ranks), "
            f"{result.seconds_per_step_single * 1000:.1f} ms (1 rank)",
        ]
    )
