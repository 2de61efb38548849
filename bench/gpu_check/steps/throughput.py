"""Tokens/s of seqserve's engine and of onnxruntime-genai's Generator (its CUDA build on the GPU) at
B = 1, 8, 32, 128, on the same graph and weights, under bench/engine's rules (protocol.measure: one
warm-up per batch size, then the best of the same number of alternating tries)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.engine import protocol
from bench.engine.engine_runs import engine_tokens_per_s
from bench.engine.peers import GenaiPeer
from bench.engine.workload import Workload
from bench.gpu_check.models import EXPORTED, manifest
from bench.gpu_check.steps.context import StepContext, StepFailure
from bench.gpu_check.steps.engines import close, first_divergence, greedy, open_engine
from bench.gpu_check.steps.genai_model import genai_folder

MODEL = "shakespeare-gpt"
BATCHES = (1, 8, 32, 128)


def genai_greedy(genai_dir: Path, prompt: list[int], new_tokens: int) -> list[int]:
    """genai's greedy continuation of one prompt: checks that the peer computes what seqserve does."""
    import onnxruntime_genai as og

    model = og.Model(str(genai_dir))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + new_tokens, do_sample=False, batch_size=1)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray([prompt], dtype=np.int32))
    for _ in range(new_tokens):
        generator.generate_next_token()
    return [int(t) for t in generator.get_sequence(0)[len(prompt) :]]


def run(ctx: StepContext) -> dict[str, Any]:
    folder = EXPORTED / MODEL
    raw = manifest(folder)
    batches = [1, 4] if ctx.quick else list(BATCHES)
    work = (
        Workload(16, 16, raw["tokenizer"]["vocab_size"])
        if ctx.quick
        else Workload(128, 256, raw["tokenizer"]["vocab_size"])
    )
    repeats = 1 if ctx.quick else 2
    genai_dir = genai_folder(folder, ctx.provider, ctx.work / "genai", ctx.threads)
    try:
        peer = GenaiPeer(genai_dir)
    except Exception as exc:  # genai's own error text is the useful part
        raise StepFailure(f"onnxruntime-genai could not load {MODEL}'s graph: {exc}") from exc
    engine = open_engine(folder, ctx.provider, max(batches), ctx.threads)
    try:
        prompt = work.prompts(1, seed=7)[0]
        agreement = first_divergence(greedy(engine, [prompt], 32)[0], genai_greedy(genai_dir, prompt, 32))
        systems: dict[str, protocol.Run] = {
            "seqserve": lambda w, b: engine_tokens_per_s(engine, w, b),
            "genai": peer.tokens_per_s,
        }
        measured = protocol.measure(systems, work, batches, repeats)
    finally:
        close(engine)
    ratio = {b: measured["seqserve"][b] / measured["genai"][b] for b in measured["seqserve"]}
    print(f"seqserve/genai by batch: { {b: round(r, 2) for b, r in ratio.items()} }", flush=True)
    return {
        "model": MODEL,
        "prompt_tokens": work.prompt_tokens,
        "new_tokens": work.new_tokens,
        "repeats": repeats,
        "tok_s": measured,
        "seqserve_over_genai": ratio,
        "genai_vs_seqserve_first_divergence_32_tokens": agreement,
    }
