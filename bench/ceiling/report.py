"""ceiling.json (every figure) and ceiling.md (the tables): per configuration and model, each protocol
beside the in-process engine at the same stream count, the one-token request rates, the refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _pair(ms: dict[str, float | None]) -> str:
    if ms["p50"] is None:
        return ""
    return f"{ms['p50']:.1f} / {ms['p99']:.1f}"


def _row(label: str, r: dict[str, Any], engine: dict[str, Any] | None, per: str) -> str:
    rate = r[f"{per}_per_s"]
    ratio = f"{rate / engine[f'{per}_per_s']:.2f}" if engine else "1.00"
    cpu = r["cpu_us_per_token"] if per == "tokens" else r["cpu_us_per_request"]
    notes = []
    if r["refused"]:
        notes.append(f"{r['refused']} refused")
    if r["incomplete"] or r["server_errors"]:
        notes.append(f"{r['incomplete']} incomplete, {r['server_errors']} 5xx")
    latencies = " | ".join(_pair(r[k]) for k in ("ttft_ms", "inter_token_ms", "latency_ms"))
    return (
        f"| {label} | {rate:,.0f} | {ratio} | {cpu:,.0f} | {latencies} | {r['loadavg_1m']:.1f} "
        f"| {', '.join(notes)} |"
    )


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        "# Ceiling: the service beside the in-process engine",
        "",
        f"Command: `{meta['command']}`. Finished {meta['finished']} on {meta['cpus']} CPUs. "
        f"Workload on both sides: prompt {meta['workload']['prompt']!r}, temperature "
        f"{meta['workload']['temperature']}, seed {meta['workload']['seed']}, eos ignored, "
        f"{meta['workload']['tokens']} tokens per request (less where a model's context ends sooner), "
        f"median of {meta['repeats']} rounds after a warm-up. The server is `python -m service` with "
        "the defaults of `make serve` (plus the overrides of a tuned configuration); the engine is "
        "`load_generation_model` with the same settings. CPU is that of the serving process, all "
        "threads (/proc); the client shares the machine. Load is the 1-minute load average after each row.",
        "",
    ]
    for config, by_model in results["configs"].items():
        overrides = meta["configs"][config] or "none (the defaults)"
        for model, r in by_model.items():
            lines += [
                f"## {model}, {config} configuration",
                "",
                f"Overrides: {overrides}. Tokens per request: {r['tokens']}.",
                "",
                "| streams · system | tokens/s | × engine | CPU µs/token | TTFT p50 / p99 ms "
                "| inter-token p50 / p99 ms | e2e p50 / p99 ms | load | notes |",
                "|---|---:|---:|---:|---|---|---|---:|---|",
            ]
            for n, row in r["streams"].items():
                for system, figures in row.items():
                    engine = None
                    if not system.startswith("engine"):
                        engine = row["engine_unary" if system == "rest_unary" else "engine_stream"]
                    lines.append(_row(f"{n} · {system}", figures, engine, "tokens"))
            if r.get("rps"):
                lines += [
                    "",
                    f"Unary one-token requests, {r['rps_concurrency']} callers:",
                    "",
                    "| system | requests/s | × engine | CPU µs/request | TTFT | inter-token "
                    "| latency p50 / p99 ms | load | notes |",
                    "|---|---:|---:|---:|---|---|---|---:|---|",
                ]
                for system, figures in r["rps"].items():
                    engine = None if system == "engine" else r["rps"]["engine"]
                    lines.append(_row(system, figures, engine, "requests"))
            if r.get("refusal"):
                f = r["refusal"]
                lines += [
                    "",
                    f"Refusals: {f['slots']} slots + {f['queue']} queue filled "
                    f"({'full' if f['full_when_sent'] else 'NOT full'} when the burst left), then "
                    f"{f['burst']} simultaneous completions: {f['burst_refused']} got 429 "
                    f"(p50 {f['refusal_ms']['p50']:.1f} ms, **p99 {f['refusal_ms']['p99']:.1f} ms**, "
                    f"max {f['refusal_ms']['max']:.1f} ms at the client; the server's own handling "
                    f"p50 {f['server_refusal_ms']['p50']:.2f} ms, "
                    f"p99 {f['server_refusal_ms']['p99']:.2f} ms), "
                    f"{f['refused_without_retry_after']} without "
                    f"Retry-After; {f['burst_accepted']} accepted; {f['accepted_incomplete']} accepted "
                    f"but incomplete; {f['server_errors']} 5xx. **{'pass' if f['ok'] else 'FAIL'}**.",
                ]
            lines.append("")
    return "\n".join(lines)


def write_report(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "ceiling.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "ceiling.md").write_text(markdown(results))
