"""Throughput of SEQSERVE_WORKERS=1 vs N: the same closed loop of REST SSE streams against each.

    python -m bench.workers [--workers 1 2] [--model-dir DIR] [--streams 32] [--tokens 64] [--seconds 5]

Without --model-dir the tiny llama fixture stands in for a model whose step costs next to nothing
(a GPU-speed step), so the service's own CPU cost sets the throughput: the case several workers
are for. Reports tokens/s and the server's CPU per token (supervisor and workers together). The
load generator runs in this process: on a machine with few cores it competes with the workers, so
run it where cores are spare (or the figures show the client, not the server). REST only: the
load generator's gRPC side uses one channel, i.e. one connection, which the kernel gives to one
worker.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.ceiling.measure import Round
from bench.ceiling.service_side import service_round
from bench.ceiling.workload import Workload
from harness.server_process import ServerProcess, linked_models


def measure(models: Path, log: Path, workers: int, args: argparse.Namespace, model: str) -> dict[str, float]:
    """Rounds of `streams` concurrent streams until `seconds` have passed, after one warm-up round."""
    server = ServerProcess(
        models, log, workers=workers, max_slots=args.streams, max_queue=4 * args.streams, max_new_tokens=4096
    ).start_ready()
    try:
        calls = [Workload(tokens=args.tokens).call("rest", True, model) for _ in range(args.streams)]

        def one_round() -> Round:
            return service_round(server, calls, args.streams)

        one_round()  # warm-up
        tokens, wall, cpu, start = 0, 0.0, 0.0, time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            measured = one_round()
            if measured.incomplete or measured.refused or measured.server_errors:
                raise RuntimeError(f"not every answer complete: {measured}")
            tokens, wall, cpu = tokens + measured.tokens, wall + measured.seconds, cpu + measured.cpu_s
        return {"tokens_per_s": tokens / wall, "server_cpu_us_per_token": 1e6 * cpu / tokens}
    finally:
        if server.stop() not in (0, None):
            raise RuntimeError(f"the server did not exit cleanly:\n{server.log()}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model-dir", type=Path, help="an exported model (default: the tiny llama fixture)")
    parser.add_argument("--streams", type=int, default=32, help="concurrent streams (and slots per worker)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per stream (eos ignored)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per worker count")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model_dir = args.model_dir
        if model_dir is None:
            from harness.tiny_models import make_tiny_model_dir  # needs torch

            model_dir = make_tiny_model_dir(tmp / "tiny", "llama")
        model = json.loads((model_dir / "manifest.json").read_text())["name"]
        models = linked_models(tmp, {model: model_dir})
        results = {n: measure(models, tmp / f"server-{n}.log", n, args, model) for n in args.workers}

    base = results[args.workers[0]]["tokens_per_s"]
    print(f"{model}: {args.streams} REST SSE streams of {args.tokens} tokens, {args.seconds:g} s each")
    print("| workers | tokens/s | x first | server CPU µs/token |")
    print("|---|---|---|---|")
    for n, r in results.items():
        line = f"| {n} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / base:.2f} |"
        print(f"{line} {r['server_cpu_us_per_token']:.0f} |")


if __name__ == "__main__":
    main()
