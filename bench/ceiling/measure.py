"""One measured round and the summary of several: rates, CPU per token, latency percentiles, and the
machine's load average beside every figure (a busy machine explains a bad figure)."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.loadgen import Outcome, percentile


@dataclass
class Round:
    """What one round of requests gave; `cpu_s` is the serving process's CPU time (all threads)."""

    seconds: float
    cpu_s: float
    requests: int
    tokens: int = 0
    refused: int = 0
    incomplete: int = 0
    server_errors: int = 0
    ttft_s: list[float] = field(default_factory=list)
    gaps_s: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, outcomes: list[Outcome], seconds: float, cpu_s: float) -> Round:
        """A service round from the load generator's outcomes."""
        served = [o for o in outcomes if not o.refused]
        return cls(
            seconds,
            cpu_s,
            len(outcomes),
            tokens=sum(o.tokens for o in served),
            refused=len(outcomes) - len(served),
            incomplete=sum(not o.complete for o in served),
            server_errors=sum(o.server_error for o in outcomes),
            ttft_s=[o.ttft_s for o in served if o.ttft_s is not None],
            gaps_s=[g for o in served for g in o.gaps_s],
            latency_s=[o.e2e_s for o in served],
        )


def _ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    return {"p50": 1000.0 * percentile(values, 50), "p99": 1000.0 * percentile(values, 99)}


def summarise(rounds: list[Round]) -> dict[str, Any]:
    """Medians over rounds for rates and CPU, percentiles over every request of every round."""
    return {
        "tokens_per_s": statistics.median(r.tokens / r.seconds for r in rounds),
        "requests_per_s": statistics.median((r.requests - r.refused) / r.seconds for r in rounds),
        "cpu_us_per_token": statistics.median(1e6 * r.cpu_s / max(r.tokens, 1) for r in rounds),
        "cpu_us_per_request": statistics.median(
            1e6 * r.cpu_s / max(r.requests - r.refused, 1) for r in rounds
        ),
        "ttft_ms": _ms([t for r in rounds for t in r.ttft_s]),
        "inter_token_ms": _ms([g for r in rounds for g in r.gaps_s]),
        "latency_ms": _ms([t for r in rounds for t in r.latency_s]),
        "requests": rounds[0].requests,
        "refused": max(r.refused for r in rounds),
        "incomplete": sum(r.incomplete for r in rounds),
        "server_errors": sum(r.server_errors for r in rounds),
        "rounds": len(rounds),
        "loadavg_1m": os.getloadavg()[0],
    }


def measure(run_round: Callable[[], Round], repeats: int) -> dict[str, Any]:
    """One warm-up round (not counted), then `repeats` rounds, summarised."""
    run_round()
    return summarise([run_round() for _ in range(repeats)])
