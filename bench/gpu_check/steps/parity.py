"""Greedy tokens of the device variant against the CPU variant, through the engine itself, on fixed
prompts: the index of the first token where they part, per prompt and model (None: never)."""

from __future__ import annotations

from typing import Any

from tokenizers import Tokenizer

from bench.gpu_check.models import exported_models
from bench.gpu_check.steps.context import StepContext
from bench.gpu_check.steps.engines import close, first_divergence, greedy, open_engine

PROMPTS = (
    "ROMEO:\n",
    "KING HENRY:\nOnce more unto the breach,",
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "JULIET:\nO Romeo, Romeo! wherefore art thou",
    "HAMLET:\nTo be, or not to be,",
    "LADY MACBETH:\nOut, damned spot!",
    "PROSPERO:\nWe are such stuff",
    "DUKE VINCENTIO:\n",
)
TARGET_TOKENS = 64  # issue 13: no divergence within the first 64 tokens


def run(ctx: StepContext) -> dict[str, Any]:
    new_tokens = 16 if ctx.quick else TARGET_TOKENS + 32
    prompts = PROMPTS[:3] if ctx.quick else PROMPTS
    results: dict[str, Any] = {"new_tokens": new_tokens, "target_tokens": TARGET_TOKENS, "models": {}}
    for name, folder in exported_models("generate").items():
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        ids = [tokenizer.encode(p, add_special_tokens=False).ids for p in prompts]
        device = open_engine(folder, ctx.provider, len(ids), ctx.threads)
        try:
            on_device = greedy(device, ids, new_tokens)
            # The file and types the engine really serves: float16 past inputs show the CUDA variant.
            device_file = device.runner.session.model_path.name
            served_types = sorted({i.type for i in device.runner.session.session.get_inputs()})
        finally:
            close(device)
        cpu = open_engine(folder, "cpu", len(ids), 2)
        try:
            on_cpu = greedy(cpu, ids, new_tokens)
            cpu_file = cpu.runner.session.model_path.name
        finally:
            close(cpu)
        divergences = [first_divergence(a, b) for a, b in zip(on_device, on_cpu, strict=True)]
        results["models"][name] = {
            "device_file": device_file,
            "cpu_file": cpu_file,
            "device_input_types": served_types,
            "first_divergence": dict(zip(prompts, divergences, strict=True)),
            "earliest": min((d for d in divergences if d is not None), default=None),
        }
        print(f"{name}: first divergence per prompt {divergences}", flush=True)
    return results
