"""The engine comparison's rules: the same warm-up and tries for every system, and only a complete
full run may replace the committed table; a peer that cannot be built stops the run."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.engine import protocol
from bench.engine.workload import Workload

FULL = Workload(128, 256, 2048)


def test_every_system_gets_one_warmup_and_the_same_tries_and_keeps_its_best() -> None:
    calls: dict[str, Counter] = {"a": Counter(), "b": Counter()}
    speeds = iter(range(1, 1000))

    def system(name: str) -> protocol.Run:
        def run(work: Workload, batch: int) -> float:
            calls[name][batch] += 1
            return float(next(speeds))

        return run

    best = protocol.measure({"a": system("a"), "b": system("b")}, FULL, [1, 8, 32], repeats=3)
    for name in calls:
        expected = {b: protocol.WARMUP_RUNS + protocol.tries(3, b) for b in (1, 8, 32)}
        assert dict(calls[name]) == expected
    # The counter only grows, so each system's best at a batch size is its last timed run there.
    assert best["b"]["32"] == float(sum(sum(c.values()) for c in calls.values()))
    assert best["a"]["32"] == best["b"]["32"] - 1


def test_only_a_complete_full_run_is_publishable() -> None:
    full = list(protocol.FULL_BATCHES)
    assert protocol.unpublishable_reasons(False, {}, full, FULL, True) == []
    assert protocol.unpublishable_reasons(True, {}, full, FULL, True) == ["quick mode (fewer runs)"]
    [reason] = protocol.unpublishable_reasons(False, {"optimum": "worker failed"}, full, FULL, True)
    assert reason == "optimum not measured: worker failed"
    assert protocol.unpublishable_reasons(False, {}, [1, 2], Workload(16, 8, 2048), False) == [
        "batch sizes [1, 2], not [1, 8, 32]",
        "workload 16+8 tokens, not 128+256",
        "not the committed default model",
    ]


def test_a_peer_that_cannot_be_built_stops_the_run_before_anything_is_measured(tmp_path: Path) -> None:
    # The peers need an HF llama checkpoint; an LSTM artifact has none, so preparing them fails.
    command = [sys.executable, "-m", "bench.engine", "--model-dir", "exported_models/shakespeare-lstm"]
    command += ["--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "only llama decoders" in done.stderr and "nothing measured" in done.stderr
    assert not (tmp_path / "out").exists()
