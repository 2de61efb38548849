"""`python -m bench.weight_quantization`: decode step time of each quantized-weight candidate of a
decoder against its committed graph, at B=1, 8 and 32, on this machine.

Why: quantized weights (training/export/weight_quant.py) cost little quality (the manifest's
`metrics.weight_candidates`), but whether they are faster depends on the CPU's kernels; the
re-export adopts one (`--weights`) only after this benchmark shows it faster on a quiet machine.
Every graph is driven the way the engine drives it (in-place cache, one token per row per step),
candidates take turns within each repeat, and the best repeat counts. The machine's load average
is recorded before and after: a busy machine makes the figures meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from training.export.ort_decoder import InPlaceDecoder
from training.export.weight_quant import CANDIDATES, quantize_weights

BASELINE = "committed"


def session_for(path: Path, threads: int) -> ort.InferenceSession:
    """A CPU session set up as the service sets up its own (all graph optimizations)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def decode_step_ms(session: ort.InferenceSession, batch: int, context: int, steps: int) -> float:
    """Mean ms of one B-row decode step after a `context`-token prefill of every row."""
    vocab = int(session.get_outputs()[0].shape[-1])
    rng = np.random.default_rng(batch)
    decoder = InPlaceDecoder(session, rows=batch)
    decoder.step(0, rng.integers(4, vocab, size=(batch, context)).tolist())
    tokens = rng.integers(4, vocab, size=(steps, batch, 1)).tolist()
    start = time.perf_counter()
    for step in tokens:
        decoder.step(0, step)
    return (time.perf_counter() - start) * 1000 / steps


def build_candidates(model_dir: Path, work: Path) -> dict[str, Path]:
    """The committed graph and each candidate made from it, as files under `work`."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    graph = onnx.load(str(model_dir / manifest["onnx"]["file"]))
    paths = {BASELINE: model_dir / manifest["onnx"]["file"]}
    for candidate in CANDIDATES:
        paths[candidate] = work / f"{candidate}.onnx"
        onnx.save_model(quantize_weights(graph, candidate), str(paths[candidate]))
    return paths


def measure(
    paths: dict[str, Path], batches: list[int], context: int, steps: int, repeats: int, threads: int
) -> dict[str, dict[str, float]]:
    """{system: {batch: best ms per step}}; systems take turns inside each repeat."""
    sessions = {name: session_for(path, threads) for name, path in paths.items()}
    best: dict[str, dict[str, float]] = {name: {} for name in sessions}
    for batch in batches:
        for session in sessions.values():
            decode_step_ms(session, batch, context, 1)  # warm-up: allocations, thread pool
        for _ in range(repeats):
            for name, session in sessions.items():
                ms = decode_step_ms(session, batch, context, steps)
                best[name][str(batch)] = min(ms, best[name].get(str(batch), float("inf")))
    return best


def markdown(results: dict[str, Any]) -> str:
    meta, ms = results["meta"], results["step_ms"]
    batches = sorted({b for row in ms.values() for b in row}, key=int)
    quality = results.get("quality", {})
    lines = [
        "# Quantized weights: decode step time",
        "",
        f"Model `{meta['model_dir']}`, {meta['threads']} ORT threads, context {meta['context']}, "
        f"{meta['steps']} steps per timing, best of {meta['repeats']}; {meta['machine']}; "
        f"load average {meta['load_before']:.2f} before, {meta['load_after']:.2f} after.",
        "",
        "| weights | "
        + " | ".join(f"B={b} ms/step (vs committed)" for b in batches)
        + " | nats/char delta |",
        "|---|" + "---|" * (len(batches) + 1),
    ]
    for name, row in ms.items():
        cells = [f"{row[b]:.3f} ({ms[BASELINE][b] / row[b]:.2f}x)" if b in row else "–" for b in batches]
        delta = quality.get(name, {}).get("delta")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'–' if delta is None else f'{delta:+.4f}'} |")
    lines += [
        "",
        "A candidate is worth adopting (`python -m training reexport exported_models/<name> --weights "
        "<candidate>`) only where it is faster at every batch size and costs at most +0.01 nats/char.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=Path("exported_models/shakespeare-gpt"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    manifest = json.loads((args.model_dir / "manifest.json").read_text())
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work:
        paths = build_candidates(args.model_dir, Path(work))
        step_ms = measure(paths, args.batches, args.context, args.steps, args.repeats, args.threads)
    results = {
        "meta": {
            "model_dir": str(args.model_dir),
            "threads": args.threads,
            "context": args.context,
            "steps": args.steps,
            "repeats": args.repeats,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"onnxruntime {ort.__version__}",
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "step_ms": step_ms,
        "quality": manifest.get("metrics", {}).get("weight_candidates", {}),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "weight_quantization.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "weight_quantization.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
