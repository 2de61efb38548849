"""`python -m bench.gpu_check.steps NAME --provider cuda --out FILE`: one step, its result as JSON.

Run by bench/gpu_check/__main__.py in the GPU venv, one process per step, so that a step's crash,
hang (killed at its time limit) or CUDA error leaves the other steps' results intact. FILE holds
{"result": ...} or {"error": "..."}; the exit code is 0 or 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import traceback
from pathlib import Path

from bench.gpu_check.steps.context import StepContext, StepFailure

STEPS = ("device", "placement", "parity", "throughput", "ceiling", "classifier")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("--provider", choices=("cuda", "cpu"), required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    work = args.work / args.step
    work.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module(f"bench.gpu_check.steps.{args.step}")
    try:
        outcome = {"result": module.run(StepContext(args.provider, args.quick, work))}
    except StepFailure as exc:
        outcome = {"error": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        outcome = {"error": f"{type(exc).__name__}: {exc}"}
    args.out.write_text(json.dumps(outcome, indent=2, default=str) + "\n")
    if "error" in outcome:
        print(f"step {args.step} failed: {outcome['error']}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
