"""`python -m bench.structured_throughput`: tokens/s of a batch of 32 JSON-schema-constrained requests
against 32 unconstrained ones, on both committed language models (the target is >= 0.7x).

Both batches sample (temperature 1, seeded) from the same prompt for the same number of tokens. The
schema is a realistic object whose last field is an open list of strings, so constrained samples run
to max_tokens like the free ones (ignore_eos) and both batches keep all 32 rows for the whole run.
Run it on a quiet machine; `--tokens 16 --repeats 1` checks it in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from service.engine import (
    Constraint,
    GenerationEngine,
    GenerationRequest,
    SamplingParams,
    load_generation_model,
)
from service.settings import Settings

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "speaker": {"enum": ["ROMEO", "JULIET", "NURSE", "MERCUTIO"]},
        "act": {"type": "integer", "minimum": 1, "maximum": 5},
        "lines": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["speaker", "act", "lines"],
    "additionalProperties": False,
}
PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks?\n"


async def _batch(engine: GenerationEngine, batch: int, tokens: int, constraint: Constraint | None) -> int:
    handles = []
    for seed in range(batch):
        params = SamplingParams(
            max_new_tokens=tokens, temperature=1.0, seed=seed, ignore_eos=True, constraint=constraint
        )
        handles.append(engine.submit(GenerationRequest(prompt=PROMPT, params=params, stream=False)))
    results = await asyncio.gather(*(h.result() for h in handles))
    return sum(r.usage.completion_tokens for r in results)


def tokens_per_s(engine: GenerationEngine, batch: int, tokens: int, constraint: Constraint | None) -> float:
    start = time.perf_counter()
    generated = asyncio.run(_batch(engine, batch, tokens, constraint))
    return generated / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--models",
        nargs="*",
        type=Path,
        default=[Path("exported_models/shakespeare-gpt"), Path("exported_models/shakespeare-lstm")],
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="ORT intra-op threads (default: the service's)")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    constraint = Constraint("json", json.dumps(SCHEMA))
    figures: dict[str, dict[str, float]] = {}
    for model_dir in args.models:
        threads = {} if args.threads is None else {"intra_op_threads": args.threads}
        settings = Settings(max_slots=args.batch, max_queue=4 * args.batch, **threads)
        engine = load_generation_model(model_dir, settings)
        engine.start()
        asyncio.run(engine.compile_constraint(constraint))  # compile once: the runs measure decoding
        # Alternate the two kinds so drift on the machine hits both alike; keep each one's best run.
        free, constrained = 0.0, 0.0
        for _ in range(args.repeats):
            free = max(free, tokens_per_s(engine, args.batch, args.tokens, None))
            constrained = max(constrained, tokens_per_s(engine, args.batch, args.tokens, constraint))
        asyncio.run(engine.stop(5))
        figures[model_dir.name] = {
            "free_tokens_per_s": round(free, 1),
            "json_schema_tokens_per_s": round(constrained, 1),
            "ratio": round(constrained / free, 3),
            "load_1m": round(os.getloadavg()[0], 2),  # the machine's load when the model's pair ended
        }
        print(f"{model_dir.name}: {figures[model_dir.name]}", flush=True)
    if args.out:
        args.out.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **figures}, indent=1)
        )


if __name__ == "__main__":
    main()
