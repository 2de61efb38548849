"""The weight-quantization benchmark's logic at a tiny setting: every candidate is built, run through
the in-place cache at each batch size, and reported beside the committed graph with the load."""

from __future__ import annotations

import json
from pathlib import Path

from bench.weight_quantization import BASELINE, main
from harness.tiny_models import make_tiny_model_dir
from training.export.weight_quant import CANDIDATES


def test_tiny_run_reports_every_candidate(tmp_path: Path) -> None:
    model_dir = make_tiny_model_dir(tmp_path / "tiny", "llama")
    out = tmp_path / "results"
    argv = ["--model-dir", str(model_dir), "--out", str(out), "--batches", "1", "2"]
    assert main([*argv, "--context", "8", "--steps", "2", "--repeats", "1", "--threads", "1"]) == 0
    results = json.loads((out / "weight_quantization.json").read_text())
    assert set(results["step_ms"]) == {BASELINE, *CANDIDATES}
    for row in results["step_ms"].values():
        assert set(row) == {"1", "2"} and all(ms > 0 for ms in row.values())
    assert results["meta"]["load_before"] >= 0 and results["meta"]["load_after"] >= 0
    table = (out / "weight_quantization.md").read_text()
    assert all(f"| {name} |" in table for name in (BASELINE, *CANDIDATES))
