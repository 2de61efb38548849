"""bench/results/gpu.{json,md}: issue 13's targets, each met, missed or not measured, then every
step's figures. Standard library only: it runs in the launcher, outside the GPU venv, and is written
again after every step so that a run cut short still leaves what it measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SERVICE_RATIO, GENAI_RATIO = 0.8, 1.0


def _result(steps: dict[str, Any], name: str) -> dict[str, Any] | None:
    return (steps.get(name) or {}).get("result")


def _target(measure: str, target: str, value: str, met: bool | None) -> dict[str, Any]:
    status = "not measured" if met is None else ("met" if met else "missed")
    return {"measure": measure, "target": target, "value": value, "status": status}


def kv_copies_target(steps: dict[str, Any]) -> dict[str, Any]:
    placed = _result(steps, "placement") or {}
    copies = {m: r["kv_copies_per_step"] for m, r in placed.items() if "kv_copies_per_step" in r}
    value = ", ".join(f"{m}: {c}" for m, c in copies.items()) or "-"
    return _target(
        "host↔device copies of the KV cache per decode step",
        "0",
        value,
        all(c == 0 for c in copies.values()) if copies else None,
    )


def genai_target(steps: dict[str, Any]) -> dict[str, Any]:
    ratios = (_result(steps, "throughput") or {}).get("seqserve_over_genai", {})
    shown = {b: r for b, r in ratios.items() if int(b) <= 32}
    value = ", ".join(f"B={b}: {r:.2f}" for b, r in shown.items()) or "-"
    return _target(
        "seqserve / genai-cuda tok/s at B=1, 8 and 32",
        f"≥ {GENAI_RATIO}",
        value,
        all(r >= GENAI_RATIO for r in shown.values()) if shown else None,
    )


def service_target(steps: dict[str, Any]) -> dict[str, Any]:
    ceiling = _result(steps, "ceiling") or {}
    ratios = ceiling.get("service_over_engine", {})
    at = ceiling.get("service_over_engine_at", "64")
    value = ", ".join(f"{p}: {r:.2f}" for p, r in ratios.items()) or "-"
    return _target(
        f"service / in-process engine at {at} streams",
        f"≥ {SERVICE_RATIO}",
        value,
        all(r >= SERVICE_RATIO for r in ratios.values()) if ratios else None,
    )


def parity_target(steps: dict[str, Any]) -> dict[str, Any]:
    parity = _result(steps, "parity") or {}
    models = parity.get("models", {})
    limit = min(parity.get("target_tokens", 64), parity.get("new_tokens", 64))
    parts = []
    for name, r in models.items():
        earliest = r["earliest"]
        parts.append(
            f"{name}: " + (f"token {earliest}" if earliest is not None else f"none in {parity['new_tokens']}")
        )
    met = all(r["earliest"] is None or r["earliest"] >= limit for r in models.values()) if models else None
    return _target(
        "greedy tokens, GPU variant vs CPU variant (first divergence)",
        f"none within the first {limit} tokens",
        "; ".join(parts) or "-",
        met,
    )


def targets(steps: dict[str, Any]) -> list[dict[str, Any]]:
    return [kv_copies_target(steps), genai_target(steps), service_target(steps), parity_target(steps)]


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _step_sections(steps: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    placed = _result(steps, "placement")
    if placed:
        lines += ["", "## Placement and copies (one decode step, or one classifier batch)", ""]
        lines += _table(
            [
                "model",
                "file",
                "nodes by provider",
                "not on the device",
                "Memcpy nodes",
                "copies / step",
                "KV copies / step",
            ],
            [
                [
                    m,
                    f"{r['variant_file']} ({r['provider']})",
                    r["nodes_by_provider"],
                    r["off_device_ops"] or "-",
                    len(r["memcpy_nodes"]),
                    r["memcpy_per_decode_step"],
                    r.get("kv_copies_per_step", "n/a"),
                ]
                for m, r in placed.items()
            ],
        )
    parity = _result(steps, "parity")
    if parity:
        lines += ["", f"## Greedy parity ({parity['new_tokens']} tokens per prompt)", ""]
        for m, r in parity["models"].items():
            lines.append(
                f"- {m} ({r['device_file']} vs {r['cpu_file']}): {list(r['first_divergence'].values())}"
            )
    tp = _result(steps, "throughput")
    if tp:
        lines += [
            "",
            f"## Engine tok/s ({tp['model']}, {tp['prompt_tokens']} + {tp['new_tokens']} tokens)",
            "",
        ]
        lines += _table(
            ["B", "seqserve", "genai", "seqserve / genai"],
            [
                [b, f"{tp['tok_s']['seqserve'][b]:,.0f}", f"{tp['tok_s']['genai'][b]:,.0f}", f"{r:.2f}"]
                for b, r in tp["seqserve_over_genai"].items()
            ],
        )
        lines.append(
            f"\ngenai's greedy tokens vs seqserve's on one prompt (32 tokens): first divergence "
            f"{tp['genai_vs_seqserve_first_divergence_32_tokens']}"
        )
    ceiling = _result(steps, "ceiling")
    if ceiling:
        lines += ["", f"## Service ceiling ({ceiling['model']}, {ceiling['tokens']} tokens per request)", ""]
        rows = []
        for n, row in ceiling["streams"].items():
            engine = row["engine_stream"]["tokens_per_s"]
            rows += [
                [
                    n,
                    p,
                    f"{row[p]['tokens_per_s']:,.0f}",
                    f"{engine:,.0f}",
                    f"{row[p]['tokens_per_s'] / engine:.2f}",
                ]
                for p in row
                if p != "engine_stream"
            ]
        lines += _table(["streams", "protocol", "service tok/s", "engine tok/s", "service / engine"], rows)
    clf = _result(steps, "classifier")
    if clf:
        lines += [
            "",
            f"## Classifiers ({clf['requests']} one-text requests, {clf['concurrency']} callers)",
            "",
        ]
        lines += _table(
            ["model", "sequential req/s", "concurrent req/s", "concurrent p99 ms"],
            [
                [
                    m,
                    f"{r['sequential']['requests_per_s']:,.0f}",
                    f"{r['concurrent']['requests_per_s']:,.0f}",
                    f"{r['concurrent']['p99_ms']:.1f}",
                ]
                for m, r in clf["models"].items()
            ],
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    title = "# GPU check" + (
        "" if meta["provider"] == "cuda" and not meta["quick"] else " (dry run: not the GPU figures)"
    )
    lines = [
        title,
        "",
        f"Command: `{meta['command']}`. {meta['machine']}. Started {meta['started']}, "
        f"{meta['seconds']:.0f} s{' so far' if not meta.get('finished') else ''}.",
        "",
        "## Targets (issue 13)",
        "",
    ]
    lines += _table(
        ["measure", "target", "measured", "status"],
        [[t["measure"], t["target"], t["value"], f"**{t['status']}**"] for t in results["targets"]],
    )
    lines += ["", "## Steps", ""]
    lines += _table(
        ["step", "status", "seconds", "why"],
        [
            [n, s["status"], f"{s.get('seconds', 0):.0f}", s.get("error", "")]
            for n, s in results["steps"].items()
        ],
    )
    lines += _step_sections(results["steps"])
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], out: Path) -> list[Path]:
    results["targets"] = targets(results["steps"])
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "gpu.json", out / "gpu.md"]
    paths[0].write_text(json.dumps(results, indent=2, default=str) + "\n")
    paths[1].write_text(markdown(results))
    return paths
