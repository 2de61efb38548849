"""`python -m bench.tiny_step`: the engine's own cost per token, on a model whose step is near free.

The tiny llama test fixture (harness/tiny_models.py) at batch 1 (a 128-token prompt, 256 new
tokens, one ORT thread, as bench.engine's workload): what is left besides ORT's own run is Python
in the scheduler, runner, sampler and output processor, which on a GPU would set the pace. Prints,
each the best of `--repeats` runs:
- generated tokens per second (wall clock; noisy on a shared machine);
- process CPU microseconds per generated token (steadier on a shared machine);
- the same run with ORT's run replaced by nothing (the logits stay as they are): the Python
  microseconds per token, prefill and request overhead included.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.engine.engine_runs import engine_tokens_per_s, open_engine
from bench.engine.workload import Workload
from harness.tiny_models import make_tiny_model_dir


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, help="where to export the fixture (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tiny-step-") as tmp:
        model = make_tiny_model_dir((args.work or Path(tmp)) / "tiny-llama", "llama")
        engine = open_engine(model, max_slots=32, threads=args.threads)
        work = Workload(prompt_tokens=128, new_tokens=256, vocab_size=engine.runner.vocab_size)
        engine_tokens_per_s(engine, work, 1)  # warm
        rates, cpu_us = [], []
        for _ in range(args.repeats):
            start = time.process_time()
            rates.append(engine_tokens_per_s(engine, work, 1))
            cpu_us.append((time.process_time() - start) / work.new_tokens * 1e6)
        session = engine.runner.session

        def no_model_run(_binding: object) -> None:
            if session.before_run is not None:
                session.before_run()  # the event hand-over still happens

        session.run_binding = no_model_run
        python_us = [1e6 / engine_tokens_per_s(engine, work, 1) for _ in range(args.repeats)]
    print(f"tiny llama, B=1, {args.threads} ORT thread(s), best of {args.repeats}:")
    print(f"  {max(rates):,.0f} tokens/s")
    print(f"  {min(cpu_us):.1f} us of process CPU per token")
    print(f"  {min(python_us):.1f} us of Python per token (the model run stubbed out)")


if __name__ == "__main__":
    main()
