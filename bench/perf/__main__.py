"""Performance report: the service (REST SSE and gRPC streams) beside the in-process engine at 1, 8,
32 and 64 concurrent streams, and sentiment at 64 concurrent clients vs sequential calls.

    python -m bench.perf [--model-dir exported_models/shakespeare-gpt] [--streams 1 8 32 64] [--quick]

Writes bench/results/perf.{json,md} and perf_{throughput,latency}.png. The server is a real
`python -m service` on 127.0.0.1 (bench/server_process.py starts it); the client runs in this
process, on the same cores, as in bench.api_overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.api_overhead import settings
from bench.perf.report import write_report
from bench.perf.runs import measure_engine, measure_sentiment, measure_service
from harness.server_process import REPO_ROOT, ServerProcess, linked_models
from service.engine import load_generation_model

RESULTS = REPO_ROOT / "bench" / "results"


def classifier_dir(tmp: Path) -> tuple[Path, str]:
    """A real sst2 export if there is one, else the tiny seeded transformer classifier (needs torch)."""
    for name in ("sst2-gpt", "sst2-lstm"):
        if (REPO_ROOT / "exported_models" / name / "manifest.json").exists():
            return REPO_ROOT / "exported_models" / name, f"{name} (exported_models)"
    from harness.tiny_models import make_tiny_model_dir

    return make_tiny_model_dir(
        tmp / "tiny-clf", "transformer_classifier"
    ), "tiny transformer_classifier fixture"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "exported_models" / "shakespeare-gpt")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sentiment-requests", type=int, default=2000)
    # One ORT thread for the server and the in-process engine alike: the load generator runs on the
    # same 2 cores, and with 2 spinning ORT threads the server and its client fight for them
    # (bench/results/perf.md gives both settings).
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (0: ORT decides)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 16 tokens, 1 repeat, 200 texts")
    args = parser.parse_args()
    if args.quick:
        args.new_tokens, args.repeats, args.sentiment_requests = 16, 1, 200

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        clf_dir, clf_note = classifier_dir(tmp)
        models = linked_models(tmp, {args.model_dir.name: args.model_dir, "clf": clf_dir})
        gen_name = json.loads((args.model_dir / "manifest.json").read_text())["name"]
        clf_name = json.loads((clf_dir / "manifest.json").read_text())["name"]

        top = max(args.streams)
        server = ServerProcess(
            models,
            tmp / "server.log",
            max_slots=top,
            max_queue=1024,
            max_new_tokens=4096,
            intra_op_threads=args.threads,
        ).start()
        engine = load_generation_model(args.model_dir, settings(top, args.threads))
        engine.start()
        results: dict[str, Any] = {"service_rest": {}, "service_grpc": {}, "engine": {}}
        try:
            server.wait_ready()
            assert server.proc is not None
            pid = server.proc.pid
            for n in args.streams:
                for proto in ("rest", "grpc"):
                    results[f"service_{proto}"][n] = measure_service(
                        server.url, server.grpc_target, pid, proto, gen_name, n, args.new_tokens, args.repeats
                    )
                results["engine"][n] = measure_engine(engine, n, args.new_tokens, args.repeats)
                print(
                    f"streams={n}: "
                    + ", ".join(f"{k} {v[n]['tokens_per_s']:.0f} tok/s" for k, v in results.items())
                )
            results["sentiment"] = measure_sentiment(server.url, clf_name, args.sentiment_requests, 64)
        finally:
            asyncio.run(engine.stop(5))
            code = server.stop()
        results["meta"] = {
            "model_dir": str(args.model_dir),
            "classifier": clf_note,
            "new_tokens": args.new_tokens,
            "repeats": args.repeats,
            "threads": args.threads,
            "quick": args.quick,
            "cpus": os.cpu_count(),
            "loadavg_after": os.getloadavg(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            "server_exit_code": code,
            "command": "python -m bench.perf " + " ".join(sys.argv[1:]),
        }
    write_report(results, RESULTS)
    print((RESULTS / "perf.md").read_text())


if __name__ == "__main__":
    main()
