"""Runs inside bench/.venv-optimum (transformers 4.57): Optimum's ORTModelForCausalLM.generate tokens/s.

Usage: python optimum_worker.py HF_DIR ONNX_DIR PLAN_JSON THREADS
PLAN_JSON: {"new_tokens": N, "warmup": W, "batches": {batch: {"prompts": [[ids]], "tries": T}}}; at each
batch size W untimed runs, then the best of T timed ones (the protocol every system gets).
Prints one JSON line {batch: tokens_per_s}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> None:
    hf_dir, onnx_dir, plan_file, threads = sys.argv[1:5]
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    torch.set_num_threads(max(1, int(threads)))
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    onnx_path = Path(onnx_dir)
    if (onnx_path / "model.onnx").exists():
        model = ORTModelForCausalLM.from_pretrained(onnx_path, use_cache=True, session_options=options)
    else:
        model = ORTModelForCausalLM.from_pretrained(
            hf_dir, export=True, use_cache=True, session_options=options
        )
        model.save_pretrained(onnx_path)
    plan = json.loads(Path(plan_file).read_text())
    new = int(plan["new_tokens"])

    def seconds(ids: torch.Tensor) -> float:
        start = time.perf_counter()
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
        )
        elapsed = time.perf_counter() - start
        assert out.shape[1] == ids.shape[1] + new
        return elapsed

    results = {}
    for batch, spec in plan["batches"].items():
        ids = torch.tensor(spec["prompts"])
        for _ in range(int(plan["warmup"])):
            seconds(ids)
        best = min(seconds(ids) for _ in range(int(spec["tries"])))
        results[batch] = int(batch) * new / best
    print(json.dumps(results))


if __name__ == "__main__":
    main()
