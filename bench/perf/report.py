"""Writes the performance report: perf.json, perf.md (tables and targets) and two PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SERVICE = ("service_rest", "service_grpc")
LABELS = {"service_rest": "REST (SSE)", "service_grpc": "gRPC stream", "engine": "in-process engine"}


def _streams(results: dict[str, Any]) -> list[int]:
    return sorted(int(n) for n in results["engine"])


def _get(results: dict[str, Any], system: str, n: int) -> dict[str, Any]:
    by_n = results[system]
    return by_n.get(n) or by_n.get(str(n)) or {}


def markdown(results: dict[str, Any]) -> str:
    meta, streams = results["meta"], _streams(results)
    lines = [
        "# Service performance",
        "",
        f"Command: `{meta['command']}`. Model `{meta['model_dir']}`, sampled, eos ignored, "
        f"{meta['new_tokens']} new tokens per stream, median of {meta['repeats']} rounds after a warm-up; "
        f"client and server share {meta['cpus']} CPUs (load average after the run: "
        f"{', '.join(f'{x:.1f}' for x in meta['loadavg_after'])}). ORT intra-op threads: "
        f"{meta['threads']} (server and in-process engine). Finished {meta['finished']}.",
        "",
        "| streams | system | tokens/s | × engine | TTFT p50 / p99 ms | inter-token p50 / p99 ms "
        "| e2e p50 / p99 ms | CPU µs per token, server / client |",
        "|---:|---|---:|---:|---|---|---|---|",
    ]
    for n in streams:
        engine = _get(results, "engine", n)["tokens_per_s"]
        lines.append(f"| {n} | {LABELS['engine']} | {engine:,.0f} | 1.00 | | | | |")
        for system in SERVICE:
            r = _get(results, system, n)
            lat = [r[k] for k in ("ttft", "inter_token", "e2e")]
            cells = " | ".join(f"{x['p50_ms']:.1f} / {x['p99_ms']:.1f}" for x in lat)
            ratio = r["tokens_per_s"] / engine
            server_us = 1000.0 * r["server_cpu_ms_per_token"]
            client_us = 1000.0 * r.get("client_cpu_ms_per_token", float("nan"))
            lines.append(
                f"| {n} | {LABELS[system]} | {r['tokens_per_s']:,.0f} | {ratio:.2f} | {cells} "
                f"| {server_us:.0f} / {client_us:.0f} |"
            )
    s = results["sentiment"]
    conc = next(k for k in s if k.startswith("concurrent_"))
    lines += [
        "",
        f"## Sentiment ({meta['classifier']})",
        "",
        "| callers | requests | requests/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for key in ("sequential", conc):
        r = s[key]
        lines.append(
            f"| {key.replace('_', ' ')} | {r['requests']} | {r['requests_per_s']:,.0f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
        )
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---:|---|"]
    for name, value, goal in targets(results):
        lines.append(f"| {name} ≥ {goal} | {value:.2f} | {'yes' if value >= goal else 'no'} |")
    return "\n".join(lines) + "\n"


def targets(results: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(name, measured ratio, goal): service vs engine at 32 streams, and the sentiment batching gain."""
    rows = []
    if 32 in _streams(results):
        engine = _get(results, "engine", 32)["tokens_per_s"]
        for system in SERVICE:
            rows.append(
                (
                    f"{LABELS[system]} / engine at 32 streams",
                    _get(results, system, 32)["tokens_per_s"] / engine,
                    0.85,
                )
            )
    rows.append(("sentiment 64 concurrent / sequential requests/s", results["sentiment"]["ratio"], 3.0))
    return rows


def plots(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    streams = _streams(results)
    fig, ax = plt.subplots(figsize=(6, 4))
    for system in ("engine", *SERVICE):
        ax.plot(
            streams,
            [_get(results, system, n)["tokens_per_s"] for n in streams],
            marker="o",
            label=LABELS[system],
        )
    ax.set(
        xscale="log",
        xlabel="concurrent streams",
        ylabel="generated tokens/s",
        title="Throughput vs concurrency",
    )
    ax.set_xticks(streams, [str(n) for n in streams])
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "perf_throughput.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key, title in zip(
        axes, ("ttft", "inter_token", "e2e"), ("TTFT", "inter-token", "end to end"), strict=True
    ):
        for system in SERVICE:
            for q, style in (("p50_ms", "-"), ("p99_ms", "--")):
                values = [_get(results, system, n)[key][q] for n in streams]
                ax.plot(streams, values, style, marker="o", label=f"{LABELS[system]} {q[:3]}")
        ax.set(xscale="log", yscale="log", xlabel="concurrent streams", ylabel="ms", title=title)
        ax.set_xticks(streams, [str(n) for n in streams])
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "perf_latency.png", dpi=120)
    plt.close(fig)


def write_report(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "perf.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "perf.md").write_text(markdown(results))
    plots(results, out)
