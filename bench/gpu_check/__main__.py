"""`make gpu-check` = `python3 -m bench.gpu_check`: issue 13's GPU measurements in one command.

    python3 -m bench.gpu_check                        # on a GPU machine: < 10 minutes
    python3 -m bench.gpu_check --provider cpu --quick # dry run on the CPU (tiny sizes, ~2 minutes)

1. preflight, before anything is installed: a GPU (nvidia-smi), a driver for CUDA 13, Python 3.11+;
   without them it stops at once (exit 2) with the reason;
2. the venv .venv-gpu (onnxruntime-gpu 1.31.1, onnxruntime-genai-cuda, the serving dependencies;
   `--wheelhouse DIR` installs from a folder of wheels on a machine without PyPI);
3. the steps, each in its own process with a time limit, inside an overall deadline: device (is CUDA
   really active for every model), placement (node providers, Memcpy nodes, copies per decode step),
   parity (greedy, GPU variant vs CPU variant), throughput (seqserve vs genai, B=1..128), ceiling
   (service vs engine over REST and gRPC), classifier (sentiment requests/s);
4. bench/results/gpu.{json,md} (a dry run: bench/results/tmp/gpu-dry/), written after every step.

Exit code: 0 when every step ran (the targets' status is in the report), 1 when a step failed or
ran out of time, 2 when the machine cannot run the check.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.gpu_check import environment, preflight, report

REPO_ROOT = environment.REPO_ROOT
STEPS = ("device", "placement", "parity", "throughput", "ceiling", "classifier")
# Seconds each step may take (full, quick); the deadline caps them all. Expected on an H200: a
# minute or less each; the limits leave room for a slow CUDA start-up, not for a hung step.
LIMITS = {
    "device": (60, 60),
    "placement": (90, 90),
    "parity": (90, 90),
    "throughput": (180, 150),
    "ceiling": (180, 150),
    "classifier": (90, 90),
}
MIN_STEP_S = 20


class Progress:
    def __init__(self) -> None:
        self.start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def __call__(self, message: str) -> None:
        print(f"[gpu-check +{self.elapsed:4.0f}s] {message}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--provider", choices=("cuda", "cpu"), default="cuda", help="cpu: the dry run")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves the logic, measures nothing")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument(
        "--out", type=Path, help="default bench/results (dry runs: bench/results/tmp/gpu-dry)"
    )
    parser.add_argument("--venv", type=Path, default=environment.DEFAULT_VENV)
    parser.add_argument("--no-install", action="store_true", help="run the steps with this python as is")
    parser.add_argument("--wheelhouse", type=Path, help="install from this folder of wheels, not PyPI")
    parser.add_argument(
        "--print-requirements",
        action="store_true",
        help="what the venv installs (for a --wheelhouse), then exit",
    )
    parser.add_argument("--install-timeout-s", type=float, default=300.0)
    parser.add_argument("--deadline-s", type=float, default=570.0, help="the whole run, install included")
    return parser.parse_args(argv)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the step and the servers it started (they drain), SIGKILL if that takes too long."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_step(python: str, step: str, args: argparse.Namespace, work: Path, env: dict, limit: float) -> dict:
    """One step in its own process group (its servers too), killed whole at `limit` seconds."""
    out = work / f"{step}.json"
    out.unlink(missing_ok=True)
    command = [
        python,
        "-m",
        "bench.gpu_check.steps",
        step,
        "--provider",
        args.provider,
        "--work",
        str(work),
        "--out",
        str(out),
        *(["--quick"] if args.quick else []),
    ]
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True)
    try:
        proc.wait(timeout=limit)
    except (subprocess.TimeoutExpired, KeyboardInterrupt) as exc:
        _stop_group(proc)
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {
            "status": "failed",
            "seconds": time.monotonic() - started,
            "error": f"ran past its {limit:.0f} s limit",
        }
    seconds = time.monotonic() - started
    if not out.exists():
        return {"status": "failed", "seconds": seconds, "error": f"exited {proc.returncode} without a result"}
    outcome = __import__("json").loads(out.read_text())
    if "error" in outcome:
        return {"status": "failed", "seconds": seconds, "error": outcome["error"]}
    return {"status": "ok", "seconds": seconds, "result": outcome["result"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.print_requirements:
        print("\n".join(environment.requirements(with_cuda_wheels=bool(environment.system_cuda_missing()))))
        return 0
    progress = Progress()
    dry = args.provider == "cpu" or args.quick
    out = args.out or (REPO_ROOT / "bench" / "results" / ("tmp/gpu-dry" if dry else ""))
    problem = preflight.python_problem()
    facts: dict[str, Any] = {}
    if problem is None and args.provider == "cuda":
        problem, facts = preflight.gpu_problem()
    if problem:
        print(f"GPU CHECK FAILED before installing anything: {problem}", file=sys.stderr, flush=True)
        return 2
    progress(f"provider {args.provider}{' (quick)' if args.quick else ''}; GPUs {facts.get('gpus', '-')}")
    # Hermetic as the servers are (harness.server_process): no SEQSERVE_* of this shell reaches a step.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQSERVE_")} | {"PYTHONUNBUFFERED": "1"}
    python = sys.executable
    if args.provider == "cuda" and not args.no_install:
        try:
            python = str(
                environment.ensure_venv(args.venv, args.wheelhouse, args.install_timeout_s, progress)
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            print(f"GPU CHECK FAILED: could not install the GPU venv {args.venv}: {exc}", file=sys.stderr)
            return 2
        env["LD_LIBRARY_PATH"] = environment.library_path(args.venv)
    work = REPO_ROOT / "bench" / "results" / "tmp" / "gpu-check"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results: dict[str, Any] = {
        "meta": {
            "command": "python3 -m bench.gpu_check " + " ".join(argv if argv is not None else sys.argv[1:]),
            "provider": args.provider,
            "quick": args.quick,
            "gpus": facts.get("gpus"),
            "driver_cuda": facts.get("driver_cuda"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, GPUs {facts.get('gpus') or 'none'}",
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "install_s": round(progress.elapsed, 1),
        },
        "steps": {},
    }
    for step in args.steps:
        left = args.deadline_s - progress.elapsed
        if left < MIN_STEP_S:
            results["steps"][step] = {"status": "not run", "error": f"out of time ({left:.0f} s left)"}
            continue
        if results["steps"].get("device", {}).get("status") == "failed":
            results["steps"][step] = {"status": "not run", "error": "the device step failed"}
            continue
        limit = min(LIMITS[step][args.quick], left)
        progress(f"step {step} (limit {limit:.0f} s)")
        results["steps"][step] = outcome = run_step(python, step, args, work, env, limit)
        progress(f"step {step}: {outcome['status']} in {outcome['seconds']:.0f} s {outcome.get('error', '')}")
        results["meta"]["seconds"] = progress.elapsed
        report.write(results, out)
    results["meta"] |= {"seconds": progress.elapsed, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    paths = report.write(results, out)
    print(paths[1].read_text(), flush=True)
    progress(f"wrote {', '.join(str(p) for p in paths)}")
    return 0 if all(s["status"] == "ok" for s in results["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
