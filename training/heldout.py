"""Score a finished classifier run on held-out folds it was neither trained nor selected on.

Early stopping picks the best weights on the run's dev folds, so the dev accuracy is optimistic.
The polarity-v2 report figure is therefore measured here, once, on folds (cv800-cv899) that the
run never saw: `python -m training.heldout --run runs/polarity-gpt --folds 800-899`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from training.build import load_run_model
from training.data import parse_folds
from training.optim import configure_threads
from training.recipe import load_recipe
from training.tasks import make_task
from training.tokenizer import load_tokenizer


def evaluate_heldout(run_dir: Path, folds: str) -> dict[str, float]:
    """Accuracy and loss of the run's best weights on `folds` of its folder corpus."""
    recipe = load_recipe(run_dir / "config.toml")
    if recipe.data.format != "folders":
        raise ValueError(f"{run_dir} reads {recipe.data.format!r} data; held-out folds need a folder corpus")
    seen = parse_folds(recipe.data.train_folds or None)
    wanted = parse_folds(folds) or frozenset()
    if seen is None or wanted & (seen | (parse_folds(recipe.data.dev_folds) or frozenset())):
        raise ValueError(f"folds {folds} overlap the folds {run_dir} was trained or selected on")
    configure_threads(recipe.optim.threads)
    heldout = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, dev_folds=folds))
    model, model_config = load_run_model(run_dir)
    task = make_task(heldout, load_tokenizer(run_dir / "tokenizer.json"), model_config)
    result = task.evaluate(model, full=True)
    count = sum(len(batch[2]) for batch in task.dev_batches)
    return {"heldout_accuracy": result["dev_accuracy"], "heldout_loss": result["dev_loss"], "examples": count}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.heldout", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--folds", required=True, help='e.g. "800-899"')
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    result = {"run": str(args.run), "folds": args.folds, **evaluate_heldout(args.run, args.folds)}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
