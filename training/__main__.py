"""Command line: python -m training {tokenizer,train,eval,heldout,export,reexport,build-defaults,ddp-smoke}.

Export lives in training/export (ONNX graph, parity check, manifest); it is imported only by the
commands that need it, so training and evaluation work without it. `train` also runs under
`torchrun --nproc_per_node N -m training train ...`: every rank runs this same command.
"""

from __future__ import annotations

import argparse
import json
import os
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
    """Train one recipe, as one process or as one of torchrun's ranks (only rank 0 prints)."""
    from torch.distributed.elastic.multiprocessing.errors import record

    from training.distributed import process_group
    from training.train import train

    recipe = load_recipe(args.config).with_overrides(
        max_steps=args.max_steps,
        max_minutes=args.max_minutes,
        threads=args.threads,
        micro_batch_size=args.micro_batch_size,
    )

    def run() -> int:
        with process_group(args.device, args.peer_timeout) as ranks:
            metrics = train(
                recipe,
                args.runs_dir,
                resume=args.resume,
                show_progress=not args.no_progress,
                interrupt_at_step=args.stop_at_step,
                ranks=ranks,
            )
        # A checkpointed stop is a success to torchrun: any other exit code reads as a failed rank.
        stopped_code = 0 if ranks.distributed else 130
        if not ranks.is_main:
            return stopped_code if metrics.get("interrupted") else 0
        if metrics.get("interrupted"):
            resume = f"python -m training train --config {args.config} --runs-dir {args.runs_dir} --resume"
            print(f"stopped at step {metrics['step']}; continue with: {resume}")
            return stopped_code
        print(f"{summarize(metrics)} -> {args.runs_dir / recipe.name}")
        return 0

    # Under torchrun, `record` hands a rank's exception to the launcher as the run's root cause.
    return record(run)() if os.environ.get("TORCHELASTIC_RUN_ID") else run()


def cmd_eval(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate_run

    result = evaluate_run(args.run)
    print(json.dumps(result, indent=1))
    return 0


def cmd_heldout(args: argparse.Namespace) -> int:
    """Score a classifier run once on folds it was neither trained nor selected on."""
    from training.evaluate import evaluate_documents, evaluate_heldout
    from training.recipe import load_recipe

    recipe = load_recipe(args.run / "config.toml")
    windows = recipe.task.long_documents == "windows" or recipe.data.format != "folders"
    score = evaluate_documents if windows else evaluate_heldout  # windows: pooled as the service pools
    result = {"run": str(args.run), "folds": args.folds, **score(args.run, args.folds)}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


def cmd_pooling(args: argparse.Namespace) -> int:
    """Choose a windowed classifier's pooling on selection folds and record it for the export."""
    from training.evaluate import choose_pooling

    print(json.dumps(choose_pooling(args.run, args.folds), indent=1))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Tune a published classifier's document calibration on selection folds; write it to its manifest."""
    from training.calibrate import calibrate_artifact

    rule = calibrate_artifact(
        args.artifact, args.folder, args.classes.split(","), args.folds, args.threads, args.windows
    )
    print(json.dumps(rule, indent=1))
    return 0


def cmd_ddp_smoke(args: argparse.Namespace) -> int:
    from training.ddp_smoke import report, run_smoke

    result = run_smoke(args.work_dir, ranks=args.ranks, steps=args.steps)
    print(report(result))
    return 0 if result.relative_difference <= args.tolerance else 1


def export(run_dir: Path, out_dir: Path | None) -> Path:
    """Call training.export.export_run, defaulting the target to exported_models/<export_name>."""
    from training.export import export_run

    if out_dir is None:
        out_dir = EXPORT_DIR / load_recipe(run_dir / "config.toml").export_name
    return export_run(run_dir, out_dir)


def cmd_export(args: argparse.Namespace) -> int:
    print(f"exported {args.run} to {export(args.run, args.out)}")
    return 0


def cmd_reexport(args: argparse.Namespace) -> int:
    """Export a committed model again from its own artifact (no run folder needed)."""
    import logging

    from training.export.reexport import ReexportOptions, declare_float32_variants, reexport

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    manifest = json.loads((args.artifact / "manifest.json").read_text())
    if not manifest["onnx"].get("kv_cache"):
        path = declare_float32_variants(args.artifact)
        print(f"{manifest['name']}: model.onnx (float32) declared for cpu and cuda in {path}")
        return 0
    options = ReexportOptions(
        kv_cache=args.kv_cache,
        quant_type=args.quant_type,
        weights=args.weights,
        measure_weight_candidates=not args.skip_weight_candidates,
        cuda_variant=not args.no_cuda_variant,
        threads=args.threads,
    )
    out = reexport(args.artifact, args.out, options)
    written = json.loads((out / "manifest.json").read_text())
    print(json.dumps({"folder": str(out), "metrics": written["metrics"]}, indent=1))
    return 0


def read_defaults(path: Path) -> list[Path]:
    """Recipe paths, one a line, relative to the repository root; blank lines and # comments skipped."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [REPO_ROOT / line for line in lines if line]


def cmd_build_defaults(args: argparse.Namespace) -> int:
    """Train every default recipe, then export each (`export = false` ones are only trained).

    Under torchrun every rank trains and rank 0 alone exports and prints."""
    from training.distributed import process_group
    from training.train import train

    summary = []
    with process_group() as ranks:
        for recipe_path in read_defaults(args.list):
            recipe = load_recipe(recipe_path).with_overrides(
                max_steps=args.max_steps, max_minutes=args.max_minutes
            )
            metrics = train(recipe, args.runs_dir, show_progress=not args.no_progress, ranks=ranks)
            if metrics.get("interrupted"):
                if ranks.is_main:
                    print("interrupted; finished models are exported, the rest are not")
                return 130
            if not recipe.export:
                summary.append(f"{summarize(metrics)} -> {args.runs_dir / recipe.name} (not exported)")
            elif ranks.is_main:
                target = export(args.runs_dir / recipe.name, args.out_dir / recipe.export_name)
                summary.append(f"{summarize(metrics)} -> {target}")
            ranks.wait_for_all()  # the export is rank 0's alone; the next recipe starts together
        if ranks.is_main:
            print("\n".join(summary))
    return 0


def parser() -> argparse.ArgumentParser:
    from training.distributed import DEFAULT_PEER_TIMEOUT_S
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
    tr.add_argument(
        "--threads", type=int, help="torch threads per rank (default: recipe, env, cores / ranks here)"
    )
    tr.add_argument(
        "--micro-batch-size",
        type=int,
        help="most rows a rank computes at once; fewer than its share of the batch: gradient accumulation",
    )
    tr.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR)
    tr.add_argument("--no-progress", action="store_true")
    tr.add_argument(
        "--stop-at-step", type=int, help="checkpoint and stop after this step, as Ctrl-C would; then --resume"
    )
    tr.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA when present"
    )
    tr.add_argument(
        "--peer-timeout",
        type=float,
        default=DEFAULT_PEER_TIMEOUT_S,
        help="under torchrun: seconds a rank waits for the others before the run is ended",
    )
    tr.set_defaults(handler=cmd_train)

    ev = commands.add_parser("eval", help="print the full validation metric of a run")
    ev.add_argument("--run", type=Path, required=True)
    ev.set_defaults(handler=cmd_eval)

    ho = commands.add_parser("heldout", help="score a classifier run on folds it never saw")
    ho.add_argument("--run", type=Path, required=True)
    ho.add_argument("--folds", required=True, help='e.g. "800-899"')
    ho.add_argument("--out", type=Path, help="also write the result as JSON here")
    ho.set_defaults(handler=cmd_heldout)

    po = commands.add_parser("pooling", help="choose the window pooling of a run on selection folds")
    po.add_argument("--run", type=Path, required=True)
    po.add_argument("--folds", required=True, help='e.g. "700-799": documents the run never trained on')
    po.set_defaults(handler=cmd_pooling)

    ca = commands.add_parser(
        "calibrate", help="tune a published classifier's document calibration on selection folds"
    )
    ca.add_argument("artifact", type=Path, help="exported_models/<name>")
    ca.add_argument("--folds", required=True, help='e.g. "700-799": documents it never trained on')
    ca.add_argument("--folder", default="polarity-v2", help="folder corpus under the data root")
    ca.add_argument("--classes", default="neg,pos", help="class folders, in label order")
    ca.add_argument("--threads", type=int, default=2)
    ca.add_argument(
        "--windows", action="store_true", help="a truncating classifier reads long texts as windows first"
    )
    ca.set_defaults(handler=cmd_calibrate)

    ex = commands.add_parser("export", help="export a run to exported_models/<name>/")
    ex.add_argument("--run", type=Path, required=True)
    ex.add_argument("--out", type=Path, help="default: exported_models/<export_name>")
    ex.set_defaults(handler=cmd_export)

    rx = commands.add_parser(
        "reexport", help="export a committed model again from its model.onnx (docs/artifact-contract.md)"
    )
    rx.add_argument("artifact", type=Path, help="exported_models/<name>")
    rx.add_argument("--out", type=Path, help="default: the artifact folder itself")
    rx.add_argument(
        "--kv-cache",
        choices=["auto", "int8", "float32"],
        default="auto",
        help="auto: int8 if <= +0.01 nats/char",
    )
    rx.add_argument("--quant-type", choices=["PER_CHANNEL", "PER_TENSOR"], default="PER_CHANNEL")
    rx.add_argument(
        "--weights",
        choices=["float32", "int4-matmulnbits", "int8-matmulnbits", "int8-dynamic"],
        default="float32",
        help="adopt a quantized weight format (only after bench/weight_quantization.py shows it faster)",
    )
    rx.add_argument("--skip-weight-candidates", action="store_true", help="do not measure the other formats")
    rx.add_argument("--no-cuda-variant", action="store_true", help="write no model.fp16.onnx")
    rx.add_argument("--threads", type=int, default=2)
    rx.set_defaults(handler=cmd_reexport)

    bd = commands.add_parser("build-defaults", help="train and export every recipe in configs/defaults.txt")
    bd.add_argument("--list", type=Path, default=DEFAULTS_LIST)
    bd.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR)
    bd.add_argument("--out-dir", type=Path, default=EXPORT_DIR)
    bd.add_argument("--max-minutes", type=float)
    bd.add_argument("--max-steps", type=int)
    bd.add_argument("--no-progress", action="store_true")
    bd.set_defaults(handler=cmd_build_defaults)

    sm = commands.add_parser(
        "ddp-smoke", help="train a tiny recipe with N ranks and with 1 at the same batch; compare losses"
    )
    sm.add_argument("--ranks", type=int, default=2)
    sm.add_argument("--steps", type=int, default=20)
    sm.add_argument("--tolerance", type=float, default=1e-4, help="largest relative loss difference")
    sm.add_argument("--work-dir", type=Path, help="default: a temporary folder")
    sm.set_defaults(handler=cmd_ddp_smoke)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
