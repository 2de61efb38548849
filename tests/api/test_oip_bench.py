"""bench/oip_overhead.py, run tiny against the shared server: its three requests are valid and its
report holds every figure the lead reads (the full run is for a quiet machine)."""

from __future__ import annotations

from bench.oip_overhead import ROUTES, TEXTS, measure
from harness.server_process import ServerProcess
from tests.api.conftest import CLF_MODEL


def test_the_benchmark_measures_every_route_at_every_concurrency(server: ServerProcess) -> None:
    assert server.proc is not None
    results = measure(server.url, server.proc.pid, CLF_MODEL, list(TEXTS[:4]), [1, 3], requests=6, repeats=1)
    assert set(results) == {"1", "3"}
    for summary in results.values():
        assert set(summary) == set(ROUTES)
        for route in ROUTES:
            figures = summary[route]
            assert 0 < figures["p50_ms"] <= figures["p99_ms"]
            assert figures["requests_per_s"] > 0 and figures["server_cpu_ms_per_request"] >= 0
        assert {"p50_overhead_pct", "cpu_overhead_pct"} <= set(summary["v2_binary"])
