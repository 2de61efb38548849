"""R5 REST fuzzing: schemathesis generates valid and invalid requests for every operation of
/openapi.json (the JSON bodies included); no answer may be a server error (5xx) but the documented
queue-timeout 503 (fuzz_checks.py). Bounded by --max-examples and a wall clock."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness.server_process import ServerProcess
from tests.system.conftest import SOAK, Models, Scale
from tests.system.fuzz_checks import QUEUE_TIMEOUT_MARK

RUN_TIMEOUT_S = 1200 if SOAK else 240


def test_schemathesis_finds_no_server_error_in_any_operation(
    system_models: Models, scale: Scale, serve: Callable[..., ServerProcess], tmp_path: Path, record: Callable
) -> None:
    # Small generation limits keep every fuzzed request cheap; limits are what the fuzzer probes.
    server = serve(system_models.root, max_slots=8, max_queue=256, max_new_tokens=32)
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{server.url}/openapi.json",
        "--checks=not_a_server_fault",
        f"--max-examples={scale.fuzz_examples}",
        "--seed=7",
        "--phases=examples,coverage,fuzzing",
        # One worker: with two, hypothesis describes filter lambdas with ast.parse in both threads at once,
        # and CPython 3.11.7's parser is not thread-safe there ("AST constructor recursion depth
        # mismatch", a schemathesis runtime error on the /v2 generate bodies). One worker is no slower.
        "--workers=1",
        "--request-timeout=30",
        "--generation-database=none",
        "--no-color",
        f"--report-junit-path={tmp_path / 'junit.xml'}",
        "--report=junit",
    ]
    hooks = {**os.environ, "SCHEMATHESIS_HOOKS": str(Path(__file__).with_name("fuzz_checks.py"))}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False, cwd=tmp_path, env=hooks
    )
    summary = done.stdout[-3000:]
    record("r5_rest_fuzz", {"command": " ".join(command[1:]), "exit_code": done.returncode, "tail": summary})
    assert done.returncode == 0, summary + done.stderr[-2000:]
    faults = [
        line
        for line in server.log().splitlines()
        if "status=5" in line and not ("status=503" in line and QUEUE_TIMEOUT_MARK in line)
    ]
    assert not faults, faults[:5]
