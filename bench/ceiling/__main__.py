"""The ceiling benchmark: what the service delivers next to its own engine, on the same workload.

    python -m bench.ceiling                       # everything: roughly 20-40 min on a 2-core machine
    python -m bench.ceiling --quick               # the headline rows: a few minutes
    python -m bench.ceiling --tuned SEQSERVE_INTRA_OP_THREADS=1 SEQSERVE_MAX_SLOTS=64

One server per configuration, started exactly as `make serve` starts it (the defaults, serving every
model of exported_models/, plus the tiny llama fixture when asked for), and, per model, the in-process
engine built with the same settings. Both get the same requests: prompt, sampling, token count and
concurrency. Rows: 1-128 concurrent streams over native REST SSE, OpenAI SSE, native REST unary and gRPC
stream, unary one-token requests per second, and a burst of simultaneous completions against a full
server. A `--tuned` configuration is measured beside the default one, never instead of it.

Writes bench/results/ceiling.{json,md} (or `--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.ceiling.engine_side import InProcessEngine
from bench.ceiling.measure import measure
from bench.ceiling.report import write_report
from bench.ceiling.service_side import refusal_burst, service_round
from bench.ceiling.workload import PROTOCOLS, RPS_PROTOCOLS, Workload
from harness.server_process import REPO_ROOT, ServerProcess, linked_models
from service.settings import Settings

EXPORTED = REPO_ROOT / "exported_models"
TINY = "tiny"  # the tiny llama test fixture: a near-free model, standing in for a GPU-speed step


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=[TINY, "shakespeare-gpt", "shakespeare-lstm"],
        help=f"'{TINY}' (the tiny llama fixture, needs torch), a name in exported_models/, or a model folder",
    )
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32, 64, 128])
    parser.add_argument("--protocols", nargs="+", choices=list(PROTOCOLS), default=list(PROTOCOLS))
    parser.add_argument(
        "--rps-protocols",
        nargs="*",
        choices=list(RPS_PROTOCOLS),
        default=list(RPS_PROTOCOLS),
        help="unary one-token requests per second over these (none: skip)",
    )
    parser.add_argument("--rps-requests", type=int, default=2000)
    parser.add_argument("--rps-concurrency", type=int, default=64)
    parser.add_argument(
        "--burst", type=int, default=1000, help="simultaneous completions on a full server (0: skip)"
    )
    parser.add_argument(
        "--filler-tokens",
        type=int,
        help="tokens of each request that fills the server before the burst (default: the most allowed)",
    )
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--tuned",
        nargs="+",
        default=[],
        metavar="SEQSERVE_X=V",
        help="settings of a second, tuned configuration measured beside the default one",
    )
    parser.add_argument(
        "--serve-chosen-only",
        action="store_true",
        help="serve only --models, not all of exported_models/ as `make serve` does (for smoke tests)",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="headline rows: tiny + shakespeare-gpt, 1 and 64 streams, REST SSE, OpenAI SSE, gRPC stream, "
        "1 repeat, 500 one-token requests (explicit flags given after it still apply)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        given = set(argv if argv is not None else sys.argv[1:])
        quick = {
            "--models": ("models", [TINY, "shakespeare-gpt"]),
            "--streams": ("streams", [1, 64]),
            "--protocols": ("protocols", ["rest_sse", "openai_sse", "grpc_stream"]),
            "--repeats": ("repeats", 1),
            "--rps-requests": ("rps_requests", 500),
        }
        for flag, (name, value) in quick.items():
            if flag not in given:
                setattr(args, name, value)
    return args


def overrides(pairs: list[str]) -> dict[str, str]:
    """SEQSERVE_X=V pairs -> {"x": "V"}, the keyword form of Settings and ServerProcess."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.startswith("SEQSERVE_"):
            raise SystemExit(f"--tuned takes SEQSERVE_NAME=VALUE, not {pair!r}")
        out[key.removeprefix("SEQSERVE_").lower()] = value
    return out


def model_folders(names: list[str], work: Path) -> dict[str, Path]:
    """name -> artifact folder for each requested model."""
    folders = {}
    for name in names:
        if name == TINY:
            from harness.tiny_models import make_tiny_model_dir

            folder = make_tiny_model_dir(work / "tiny-llama", "llama")
        elif (EXPORTED / name / "manifest.json").exists():
            folder = EXPORTED / name
        elif (Path(name) / "manifest.json").exists():
            folder = Path(name)
        else:
            raise SystemExit(f"no model {name!r}: not '{TINY}', not in {EXPORTED}, not a model folder")
        folders[json.loads((folder / "manifest.json").read_text())["name"]] = folder
    return folders


def served_models(chosen: dict[str, Path]) -> dict[str, Path]:
    """What `make serve` serves (every model of exported_models/), plus the chosen ones."""
    every = {f.name: f for f in sorted(EXPORTED.iterdir()) if (f / "manifest.json").exists()}
    return every | chosen


def measure_model(
    args: argparse.Namespace, server: ServerProcess, name: str, folder: Path, settings: Settings
) -> dict[str, Any]:
    workload = Workload(tokens=args.tokens)
    engine = InProcessEngine(folder, settings)
    try:
        tokens = engine.fit(workload)
        result: dict[str, Any] = {"tokens": tokens, "streams": {}}
        streamed = any(PROTOCOLS[p][1] for p in args.protocols)
        for n in args.streams:
            row: dict[str, Any] = {}
            if streamed:
                row["engine_stream"] = measure(
                    lambda n=n: engine.round(workload, n, n, True, tokens), args.repeats
                )
            if "rest_unary" in args.protocols:
                row["engine_unary"] = measure(
                    lambda n=n: engine.round(workload, n, n, False, tokens), args.repeats
                )
            for proto in args.protocols:
                kind, stream = PROTOCOLS[proto]
                calls = [workload.call(kind, stream, name, tokens) for _ in range(n)]
                row[proto] = measure(lambda c=calls, n=n: service_round(server, c, n), args.repeats)
            result["streams"][n] = row
            print(f"{name} x{n}: " + ", ".join(f"{k} {v['tokens_per_s']:,.0f} tok/s" for k, v in row.items()))
        if args.rps_protocols:
            conc, count = args.rps_concurrency, args.rps_requests
            rps = {"engine": measure(lambda: engine.round(workload, conc, count, False, 1), args.repeats)}
            for proto in args.rps_protocols:
                calls = [workload.call(RPS_PROTOCOLS[proto], False, name, 1) for _ in range(count)]
                rps[proto] = measure(lambda c=calls: service_round(server, c, conc), args.repeats)
            result["rps"], result["rps_concurrency"] = rps, conc
            print(
                f"{name} one-token: "
                + ", ".join(f"{k} {v['requests_per_s']:,.0f} req/s" for k, v in rps.items())
            )
        if args.burst:
            filler = engine.fit(Workload(tokens=args.filler_tokens or settings.max_new_tokens))
            result["refusal"] = refusal_burst(server, workload, name, settings.max_queue, args.burst, filler)
            print(f"{name} refusals: {result['refusal']}")
        return result
    finally:
        engine.close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Hermetic, as the server is (harness.server_process): the engine's Settings must not read a
    # SEQSERVE_* variable of this shell that the server does not get.
    for key in [k for k in os.environ if k.startswith("SEQSERVE_")]:
        del os.environ[key]
    configs = {"default": {}} | ({"tuned": overrides(args.tuned)} if args.tuned else {})
    results: dict[str, Any] = {"configs": {}}
    with tempfile.TemporaryDirectory() as tmp_name:
        work = Path(tmp_name)
        chosen = model_folders(args.models, work)
        for config, env in configs.items():
            settings = Settings(**env)
            served = chosen if args.serve_chosen_only else served_models(chosen)
            models_dir = linked_models(work / config, served)
            server = ServerProcess(models_dir, work / f"server-{config}.log", **env).start_ready()
            try:
                results["configs"][config] = {
                    name: measure_model(args, server, name, folder, settings)
                    for name, folder in chosen.items()
                }
            finally:
                code = server.stop()
                if code != 0:
                    print(f"server ({config}) exited {code}:\n{server.log()[-4000:]}", file=sys.stderr)
    results["meta"] = {
        "command": "python -m bench.ceiling " + " ".join(argv if argv is not None else sys.argv[1:]),
        "configs": {c: {f"SEQSERVE_{k.upper()}": v for k, v in env.items()} for c, env in configs.items()},
        "workload": vars(Workload(tokens=args.tokens)),
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_report(results, args.out)
    print((args.out / "ceiling.md").read_text())


if __name__ == "__main__":
    main()
