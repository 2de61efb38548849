"""`python -m bench.engine [--quick] [--model-dir DIR] [--rnn-dir DIR] [--hf-dir DIR]`: every engine
measurement side by side in one run, written to bench/results/engine.{json,md} and PNG plots."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import onnxruntime

from bench.engine import engine_runs, peers, report
from bench.engine.models import hf_export, stand_in_transformer
from bench.engine.workload import Workload
from service.engine import read_manifest

log = logging.getLogger("bench.engine")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=Path("exported_models/shakespeare-gpt"))
    parser.add_argument("--rnn-dir", type=Path, default=Path("exported_models/shakespeare-lstm"))
    parser.add_argument("--hf-dir", type=Path, help="HF export of --model-dir's weights (else export_hf)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--work", type=Path, default=Path("bench/results/tmp"), help="scratch (gitignored)")
    # Every system gets the same thread count. The default is the service's own setting on this
    # 2-core machine (ORT picks one thread per core). Run on a quiet machine: spinning intra-op
    # threads on a busy one make every system's numbers collapse at random (use --threads 1 there).
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and batch sizes (< 5 minutes)")
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["genai", "optimum", "transformers", "no_cache"]
    )
    return parser.parse_args()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model_dir, run_dir, note = args.model_dir, None, "the trained default model"
    if not (model_dir / "manifest.json").exists():
        log.info("%s is not exported yet: using a random-weight model of the same recipe", model_dir)
        model_dir, run_dir = stand_in_transformer(args.work)
        note = "random weights in the shakespeare-gpt recipe's shape: the trained model was not exported yet"
    manifest = read_manifest(model_dir, verify=False)
    max_len = (manifest.onnx.get("kv_cache") or {}).get("max_len") or 1 << 30
    # 128 + 256 tokens, unless the model's cache is shorter (then the run says so in its meta).
    work = Workload(prompt_tokens=128, new_tokens=min(256, max_len - 128), vocab_size=manifest.vocab_size)
    repeats = 2 if args.quick else 3
    batches = ["1", "8", "32"]
    results: dict[str, Any] = {
        "meta": {
            "model_dir": str(model_dir),
            "model_note": note,
            "threads": args.threads,
            "quick": args.quick,
            "prompt_tokens": work.prompt_tokens,
            "new_tokens": work.new_tokens,
            "repeats": repeats,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared), "
            f"onnxruntime {onnxruntime.__version__}",
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "throughput": {},
        "skipped": {},
    }
    tp, skipped = results["throughput"], results["skipped"]

    engine = engine_runs.open_engine(model_dir, max_slots=32, threads=args.threads)
    engine_runs.engine_tokens_per_s(engine, Workload(16, 16, work.vocab_size), 8)  # warm the path
    hf_dir = args.hf_dir or hf_export(run_dir, model_dir, args.work / "hf", int(max_len))
    genai = None
    if isinstance(hf_dir, str):
        for peer in ("genai", "transformers", "optimum"):
            skipped[peer] = hf_dir
    elif "genai" not in args.skip:
        genai = peers.GenaiPeer(peers.build_genai_model(hf_dir, args.work / "genai", args.threads))
    # seqserve and genai alternate, best of `repeats` each, so load drifting on the shared CPU hits both.
    tp["seqserve"] = {}
    if genai is not None:
        tp["genai"] = {}
    for b in batches:
        ours, theirs = [], []
        # Short runs (B=1 takes ~0.1 s) get more tries: a random stall costs them the most.
        for _ in range(repeats * {"1": 4, "8": 2}.get(b, 1)):
            ours.append(engine_runs.engine_tokens_per_s(engine, work, int(b)))
            if genai is not None:
                theirs.append(genai.tokens_per_s(work, int(b)))
        tp["seqserve"][b] = max(ours)
        if genai is not None:
            tp["genai"][b] = max(theirs)
    log.info("seqserve %s genai %s", tp["seqserve"], tp.get("genai"))

    if not isinstance(hf_dir, str):
        if "optimum" not in args.skip:
            python = peers.optimum_venv(Path("bench/.venv-optimum"))
            measured = (
                python
                if isinstance(python, str)
                else peers.optimum_tokens_per_s(
                    python, hf_dir, args.work, work, [int(b) for b in batches], args.threads, repeats - 1
                )
            )
            if isinstance(measured, str):
                skipped["optimum"] = measured
            else:
                tp["optimum"] = {str(b): v for b, v in measured.items()}
        if "transformers" not in args.skip:
            tp["transformers"] = {
                b: peers.transformers_tokens_per_s(hf_dir, work, int(b), 1, args.threads) for b in batches
            }
    if "no_cache" not in args.skip:
        no_cache_batches = ["1", "8"] if args.quick else batches
        tp["ort_no_cache"] = {b: peers.no_cache_tokens_per_s(engine, work, int(b)) for b in no_cache_batches}

    contexts = [128, 256, 512, 1024]
    usable = [c for c in contexts if c + 8 <= (engine.runner.max_len or 1 << 30)]
    results["step_vs_context"] = {
        "batch": 32,
        "ms": {str(c): engine_runs.decode_step_ms(engine, 32, c, 10 if args.quick else 30) for c in usable},
    }
    # How much one decode step gains from batching at all: bounds any concurrent/single ratio.
    steps = 10 if args.quick else 30
    one, full = (
        engine_runs.decode_step_ms(engine, 1, 256, steps),
        engine_runs.decode_step_ms(engine, 32, 256, steps),
    )
    results["decode_scaling"] = {
        "context": 256,
        "b1_ms": one,
        "b32_ms": full,
        "throughput_gain": 32 * one / full,
    }
    hole_context = min(256, (engine.runner.max_len or 1 << 30) - 16)
    results["holes"] = {
        "active": 8,
        "holes": 8,
        "context": hole_context,
        **engine_runs.hole_cost_ms(engine, 8, 8, hole_context, 10 if args.quick else 30),
    }
    results["continuous"] = {"clients": 32, **engine_runs.continuous_batching(engine, work, 32, repeats)}
    asyncio.run(engine.stop(5))

    results["rnn"] = rnn_results(args, repeats)
    for path in report.write(results, args.out):
        log.info("wrote %s", path)
    print((args.out / "engine.md").read_text())


def rnn_results(args: argparse.Namespace, repeats: int) -> dict[str, Any]:
    rnn_dir, note = args.rnn_dir, "the trained default model"
    if not (rnn_dir / "manifest.json").exists():
        from harness.tiny_models import make_tiny_model_dir

        rnn_dir = make_tiny_model_dir(args.work / "tiny-lstm", "lstm")
        note = "the tiny test LSTM: the trained default model was not exported yet"
    engine = engine_runs.open_engine(rnn_dir, max_slots=32, threads=args.threads)
    work = Workload(128, 256, read_manifest(rnn_dir, verify=False).vocab_size)
    tok_s = {b: engine_runs.engine_tokens_per_s(engine, work, int(b), repeats) for b in ("1", "32")}
    asyncio.run(engine.stop(5))
    return {"model_dir": str(rnn_dir), "note": note, "tok_s": tok_s}


if __name__ == "__main__":
    main()
