"""`python -m bench.engine [--quick] [--model-dir DIR] [--rnn-dir DIR] [--hf-dir DIR]`: every engine
measurement side by side in one run, written to bench/results/engine.{json,md} and PNG plots.

Every peer (onnxruntime-genai, HF transformers, Optimum, ORT without a cache) runs on the same weights:
the HF checkpoint they load is rebuilt from the committed artifact, so a fresh clone compares them all.
A peer that cannot be built stops the run before anything is measured. Only a complete full run may
replace the committed table; a quick, partial or non-default run is written under --work instead,
marked invalid, and a peer that failed mid-run makes the command exit non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import onnxruntime

from bench.engine import engine_runs, peers, protocol, report
from bench.engine.models import hf_checkpoint, peer_folder, stand_in_transformer
from bench.engine.workload import Workload
from service.engine import read_manifest
from training.export.reexport import float32_cache_artifact

log = logging.getLogger("bench.engine")
DEFAULT_MODEL = Path("exported_models/shakespeare-gpt")
PEERS = ("genai", "optimum", "transformers", "no_cache")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--rnn-dir", type=Path, default=Path("exported_models/shakespeare-lstm"))
    parser.add_argument("--hf-dir", type=Path, help="HF llama folder of --model-dir's weights (else rebuilt)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--work", type=Path, default=Path("bench/results/tmp"), help="scratch (gitignored)")
    # Every system gets the same thread count. The default is the service's own setting on this
    # 2-core machine (ORT picks one thread per core). Run on a quiet machine: spinning intra-op
    # threads on a busy one make every system's numbers collapse at random (use --threads 1 there).
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and batch sizes (< 5 minutes)")
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=PEERS, help="leave peers out (run not published)"
    )
    # A smaller workload checks the run's logic in seconds; such a run is never published.
    parser.add_argument("--batches", type=int, nargs="+", default=list(protocol.FULL_BATCHES))
    parser.add_argument("--prompt-tokens", type=int, default=protocol.FULL_WORKLOAD[0])
    parser.add_argument("--new-tokens", type=int, default=protocol.FULL_WORKLOAD[1])
    parser.add_argument("--repeats", type=int, help="timed runs per system (default 3, quick 2)")
    parser.add_argument(
        "--skip-extras", action="store_true", help="throughput table only (run not published)"
    )
    return parser.parse_args()


def prepare_peers(args: argparse.Namespace, model_dir: Path, max_len: int) -> dict[str, Any]:
    """Build and load every peer not skipped; any failure stops the run here, before measuring."""
    built: dict[str, Any] = {}
    wanted = [p for p in ("genai", "transformers", "optimum") if p not in args.skip]
    if not wanted:
        return built
    scratch = peer_folder(model_dir, args.work)
    hf_dir = hf_checkpoint(model_dir, args.hf_dir or scratch / "hf", max_len)
    built["hf_dir"] = hf_dir
    if "genai" in wanted:
        built["genai"] = peers.GenaiPeer(peers.build_genai_model(hf_dir, scratch / "genai", args.threads))
    if "transformers" in wanted:
        built["transformers"] = peers.TransformersPeer(hf_dir, args.threads)
    if "optimum" in wanted:
        python = peers.optimum_venv(Path("bench/.venv-optimum"))
        if isinstance(python, str):
            raise RuntimeError(python)
        built["optimum"] = python, scratch / "optimum_onnx"
    return built


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model_dir, note = args.model_dir, "the trained default model"
    if not (model_dir / "manifest.json").exists():
        log.info("%s is not exported yet: using a random-weight model of the same recipe", model_dir)
        model_dir = stand_in_transformer(args.work)
        note = "random weights in the shakespeare-gpt recipe's shape: the trained model was not exported yet"
    manifest = read_manifest(model_dir, verify=False)
    max_len = (manifest.onnx.get("kv_cache") or {}).get("max_len") or 1 << 30
    # 128 + 256 tokens, unless the model's cache is shorter (then the run is not published).
    new_tokens = min(args.new_tokens, max_len - args.prompt_tokens)
    work = Workload(args.prompt_tokens, new_tokens, vocab_size=manifest.vocab_size)
    repeats = args.repeats or (2 if args.quick else 3)
    batches = args.batches
    try:
        built = prepare_peers(args, model_dir, int(max_len))
    except Exception as exc:  # any peer failure ends the run, with its reason
        log.error(
            "a peer could not be prepared, nothing measured: %s\n(--skip %s measures without it; "
            "such a run is not published)",
            exc,
            " ".join(p for p in ("genai", "transformers", "optimum") if p not in args.skip),
        )
        return 1
    results: dict[str, Any] = {
        "meta": {
            "model_dir": str(model_dir),
            "model_note": note,
            "threads": args.threads,
            "quick": args.quick,
            "prompt_tokens": work.prompt_tokens,
            "new_tokens": work.new_tokens,
            "repeats": repeats,
            "warmup_runs": protocol.WARMUP_RUNS,
            "tries": {str(b): protocol.tries(repeats, b) for b in batches},
            "hf_dir": str(built.get("hf_dir", "")),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared), "
            f"onnxruntime {onnxruntime.__version__}, load {os.getloadavg()[0]:.2f} at the start",
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "throughput": {},
        "skipped": {name: "--skip" for name in args.skip},
    }
    tp, skipped = results["throughput"], results["skipped"]

    engine = engine_runs.open_engine(model_dir, max_slots=max(32, *batches), threads=args.threads)
    systems: dict[str, protocol.Run] = {
        "seqserve": lambda w, b: engine_runs.engine_tokens_per_s(engine, w, b),
    }
    # Where the committed graph caches in int8, the same engine with a float32 cache shows how much
    # of the comparison the int8 cache makes (the issue asks for both).
    float32_engine = None
    if (manifest.onnx.get("kv_cache") or {}).get("dtype") == "int8":
        float32_dir = float32_cache_artifact(model_dir, args.work / "float32-cache")
        float32_engine = engine_runs.open_engine(
            float32_dir, max_slots=max(32, *batches), threads=args.threads
        )
        systems["seqserve_float32_cache"] = lambda w, b: engine_runs.engine_tokens_per_s(float32_engine, w, b)
    for name in ("genai", "transformers"):
        if name in built:
            systems[name] = built[name].tokens_per_s
    tp.update(protocol.measure(systems, work, batches, repeats))
    if "optimum" in built:
        python, onnx_dir = built["optimum"]
        measured = peers.optimum_tokens_per_s(
            python, built["hf_dir"], onnx_dir, work, batches, args.threads, repeats
        )
        if isinstance(measured, str):
            skipped["optimum"] = measured
        else:
            tp["optimum"] = measured
    if "no_cache" not in args.skip:
        # Quadratic: quick mode leaves out its slowest batch size (a quick run is never published).
        no_cache_batches = [b for b in batches if b <= 8] if args.quick else batches
        tp.update(
            protocol.measure(
                {"ort_no_cache": lambda w, b: peers.no_cache_tokens_per_s(engine, w, b)},
                work,
                no_cache_batches,
                repeats,
            )
        )
    if not args.skip_extras:
        engine_extras(results, engine, work, args.quick, repeats)
        if float32_engine is not None:
            results["step_vs_context_float32_cache"] = step_vs_context(float32_engine, args.quick)
    asyncio.run(engine.stop(5))
    if float32_engine is not None:
        asyncio.run(float32_engine.stop(5))
    if not args.skip_extras:
        results["rnn"] = rnn_results(args, work, repeats)

    reasons = protocol.unpublishable_reasons(
        args.quick, skipped, batches, work, model_dir.resolve() == DEFAULT_MODEL.resolve()
    )
    if args.skip_extras:
        reasons.append("--skip-extras")
    results["meta"]["valid"] = not reasons
    results["meta"]["invalid_because"] = reasons
    out = args.out if not reasons else args.work / "unpublished"
    if reasons:
        log.warning("not replacing %s/engine.*: %s", args.out, "; ".join(reasons))
    for path in report.write(results, out):
        log.info("wrote %s", path)
    print((out / "engine.md").read_text())
    failed = sorted(set(skipped) - set(args.skip))
    if failed:
        log.error("peers that failed during the run: %s", failed)
        return 1
    return 0


def step_vs_context(engine: Any, quick: bool) -> dict[str, Any]:
    """B=32 decode step time at contexts 128-1024: how much the cache's bytes cost per step."""
    contexts = [128, 256, 512, 1024]
    usable = [c for c in contexts if c + 8 <= (engine.runner.max_len or 1 << 30)]
    return {
        "batch": 32,
        "ms": {str(c): engine_runs.decode_step_ms(engine, 32, c, 10 if quick else 30) for c in usable},
    }


def engine_extras(results: dict[str, Any], engine: Any, work: Workload, quick: bool, repeats: int) -> None:
    """seqserve's own measurements: step vs context, batching gain, holes, continuous batching."""
    results["step_vs_context"] = step_vs_context(engine, quick)
    # How much one decode step gains from batching at all: bounds any concurrent/single ratio.
    steps = 10 if quick else 30
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
        **engine_runs.hole_cost_ms(engine, 8, 8, hole_context, 10 if quick else 30),
    }
    results["continuous"] = {"clients": 32, **engine_runs.continuous_batching(engine, work, 32, repeats)}


def rnn_results(args: argparse.Namespace, work: Workload, repeats: int) -> dict[str, Any]:
    rnn_dir, note = args.rnn_dir, "the trained default model"
    if not (rnn_dir / "manifest.json").exists():
        from harness.tiny_models import make_tiny_model_dir

        rnn_dir = make_tiny_model_dir(args.work / "tiny-lstm", "lstm")
        note = "the tiny test LSTM: the trained default model was not exported yet"
    engine = engine_runs.open_engine(rnn_dir, max_slots=32, threads=args.threads)
    work = Workload(work.prompt_tokens, work.new_tokens, read_manifest(rnn_dir, verify=False).vocab_size)
    tok_s = protocol.measure(
        {"seqserve": lambda w, b: engine_runs.engine_tokens_per_s(engine, w, b)}, work, [1, 32], repeats
    )["seqserve"]
    asyncio.run(engine.stop(5))
    return {"model_dir": str(rnn_dir), "note": note, "tok_s": tok_s}


if __name__ == "__main__":
    sys.exit(main())
