"""The ceiling benchmark's logic, at a tiny setting (seconds): `python -m bench.ceiling` run as a user
runs it, on the tiny llama, with every protocol, the one-token rows, the refusal burst and a tuned
configuration. Figures are not checked (timings belong in the benchmark), only that every row is
there, like for like, and that the benchmark counted what it sent."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.server_process import REPO_ROOT
from service.settings import Settings

PROTOCOLS = ["rest_sse", "openai_sse", "rest_unary", "grpc_stream"]
RPS = ["rest_unary", "openai_unary", "grpc_unary"]


@pytest.mark.slow
def test_a_tiny_ceiling_run_reports_every_row_for_both_configurations(
    tiny_model_dir: Callable[..., Path], tmp_path: Path
) -> None:
    model = tiny_model_dir("llama")
    command = [
        sys.executable, "-m", "bench.ceiling", "--models", str(model), "--serve-chosen-only",
        "--streams", "1", "3", "--tokens", "4", "--repeats", "1", "--protocols", *PROTOCOLS,
        "--rps-protocols", *RPS, "--rps-requests", "6", "--rps-concurrency", "3", "--burst", "12",
        "--filler-tokens", "40",
        "--tuned", "SEQSERVE_INTRA_OP_THREADS=1", "SEQSERVE_MAX_QUEUE=4", "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "ceiling.json").read_text())
    assert results["meta"]["configs"] == {
        "default": {},
        "tuned": {"SEQSERVE_INTRA_OP_THREADS": "1", "SEQSERVE_MAX_QUEUE": "4"},
    }
    for config in ("default", "tuned"):
        (figures,) = results["configs"][config].values()
        assert figures["tokens"] == 4
        for n in ("1", "3"):
            row = figures["streams"][n]
            assert set(row) == {"engine_stream", "engine_unary", *PROTOCOLS}
            for system, r in row.items():
                assert r["requests"] == int(n) and r["refused"] == 0, (config, n, system)
                assert r["incomplete"] == 0 and r["server_errors"] == 0, (config, n, system)
                assert r["tokens_per_s"] > 0 and r["cpu_us_per_token"] >= 0
                streamed = system in ("engine_stream", "rest_sse", "openai_sse", "grpc_stream")
                assert (r["ttft_ms"]["p50"] is not None) == streamed, (system, r["ttft_ms"])
        assert set(figures["rps"]) == {"engine", *RPS}
        assert all(r["requests"] == 6 and r["incomplete"] == 0 for r in figures["rps"].values())
        refusal = figures["refusal"]
        assert refusal["ok"], refusal
        assert refusal["burst_refused"] + refusal["burst_accepted"] == 12
        # Each server got its settings: the default queue, or the 4 places the tuned one asked for.
        assert refusal["queue"] == (4 if config == "tuned" else Settings.model_fields["max_queue"].default)
    report = (tmp_path / "ceiling.md").read_text()
    assert "## tiny-llama, default configuration" in report and "## tiny-llama, tuned configuration" in report
    assert "| 3 · grpc_stream |" in report and "Refusals:" in report
