"""Command line: python -m training {tokenizer,train,eval,export,build-defaults}.

Export lives in training/export (ONNX graph, parity check, manifest); it is imported only by the
commands that need it, so training and evaluation work without it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from training.data import REPO_ROOT, read_text
from training.recipe import load_recipe
from training.tokenizer import save_tokenizer, train_tokenizer

DEFAULTS_LIST = REPO_ROOT / "training" / "configs" / "defaults.txt"
EXPORT_DIR = REPO_ROOT / "exported_models"


def summarize(metrics: dict) -> str:
    """One line per finished run: its headline metric, steps and seconds."""
    metric = metrics["metric"]
    steps, seconds = metrics["steps"], metrics["seconds"]
    return f"{metrics['name']}: {metric} {metrics[metric]:.4f} ({steps} steps, {seconds:.0f} s)"


def cmd_tokenizer(args: argparse.Namespace) -> int:
    """Train a tokenizer on a recipe's training split, or on whole text files."""
    if args.config:
        from training.tasks import training_texts

        recipe = load_recipe(args.config)
        texts = training_texts(recipe)[0]
        kind, vocab_size = args.kind or recipe.tokenizer.kind, args.vocab_size or recipe.tokenizer.vocab_size
    elif args.input:
        texts = [read_text(path) for path in args.input]
        kind, vocab_size = args.kind or "bpe", args.vocab_size or 1024
    else:
        raise SystemExit("tokenizer: give --config RECIPE or --input FILE")
    tokenizer = train_tokenizer(kind, texts, vocab_size)
    path = save_tokenizer(tokenizer, args.out)
    print(f"{kind} tokenizer with {tokenizer.get_vocab_size()} tokens written to {path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from training.train import train

    recipe = load_recipe(args.config).with_overrides(
        max_steps=args.max_steps, max_minutes=args.max_minutes, threads=args.threads
    )
    metrics = train(recipe, args.runs_dir, resume=args.resume, show_progress=not args.no_progress)
    if metrics.get("interrupted"):
        resume = f"python -m training train --config {args.config} --runs-dir {args.runs_dir} --resume"
        print(f"stopped at step {metrics['step']}; continue with: {resume}")
        return 130
    print(f"{summarize(metrics)} -> {args.runs_dir / recipe.name}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from training.train import evaluate_run

    result = evaluate_run(args.run)
    print(json.dumps(result, indent=1))
    return 0


def export(run_dir: Path, out_dir: Path | None) -> Path:
    """Call training.export.export_run, defaulting the target to exported_models/<export_name>."""
    from training.export import export_run

    if out_dir is None:
        out_dir = EXPORT_DIR / load_recipe(run_dir / "config.toml").export_name
    return export_run(run_dir, out_dir)


def cmd_export(args: argparse.Namespace) -> int:
    print(f"exported {args.run} to {export(args.run, args.out)}")
    return 0


def read_defaults(path: Path) -> list[Path]:
    """Recipe paths, one a line, relative to the repository root; blank lines and # comments skipped."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [REPO_ROOT / line for line in lines if line]


def cmd_build_defaults(args: argparse.Namespace) -> int:
    """Train every default recipe, then export each (`export = false` ones are only trained)."""
    from training.train import train

    summary = []
    for recipe_path in read_defaults(args.list):
        recipe = load_recipe(recipe_path).with_overrides(
            max_steps=args.max_steps, max_minutes=args.max_minutes
        )
        metrics = train(recipe, args.runs_dir, show_progress=not args.no_progress)
        if metrics.get("interrupted"):
            print("interrupted; finished models are exported, the rest are not")
            return 130
        if not recipe.export:
            summary.append(f"{summarize(metrics)} -> {args.runs_dir / recipe.name} (not exported)")
            continue
        target = export(args.runs_dir / recipe.name, args.out_dir / recipe.export_name)
        summary.append(f"{summarize(metrics)} -> {target}")
    print("\n".join(summary))
    return 0


def parser() -> argparse.ArgumentParser:
    from training.train import DEFAULT_RUNS_DIR

    root = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", required=True)

    tok = commands.add_parser("tokenizer", help="train and save a tokenizer.json")
    tok.add_argument("--config", type=Path, help="recipe whose [tokenizer] and training split to use")
    tok.add_argument("--input", type=Path, nargs="+", help="text files (relative paths: under the data root)")
    tok.add_argument("--kind", choices=["bpe", "char"])
    tok.add_argument("--vocab-size", type=int)
    tok.add_argument("--out", type=Path, required=True)
    tok.set_defaults(handler=cmd_tokenizer)

    tr = commands.add_parser("train", help="train a recipe into runs/<name>/")
    tr.add_argument("--config", type=Path, required=True)
    tr.add_argument("--resume", action="store_true", help="continue from runs/<name>/checkpoint")
    tr.add_argument("--max-minutes", type=float)
    tr.add_argument("--max-steps", type=int)
    tr.add_argument("--threads", type=int, help="torch threads (default: recipe, env, every core)")
    tr.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR)
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(handler=cmd_train)

    ev = commands.add_parser("eval", help="print the full validation metric of a run")
    ev.add_argument("--run", type=Path, required=True)
    ev.set_defaults(handler=cmd_eval)

    ex = commands.add_parser("export", help="export a run to exported_models/<name>/")
    ex.add_argument("--run", type=Path, required=True)
    ex.add_argument("--out", type=Path, help="default: exported_models/<export_name>")
    ex.set_defaults(handler=cmd_export)

    bd = commands.add_parser("build-defaults", help="train and export every recipe in configs/defaults.txt")
    bd.add_argument("--list", type=Path, default=DEFAULTS_LIST)
    bd.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR)
    bd.add_argument("--out-dir", type=Path, default=EXPORT_DIR)
    bd.add_argument("--max-minutes", type=float)
    bd.add_argument("--max-steps", type=int)
    bd.add_argument("--no-progress", action="store_true")
    bd.set_defaults(handler=cmd_build_defaults)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
