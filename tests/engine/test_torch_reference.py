"""Greedy tokens from the engine equal torch's greedy generation, for every generation architecture,
with the requests running together in one continuous batch."""

from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np
import pytest

from harness.tiny_models import load_tiny_torch_model, torch_reference_greedy
from service.engine import read_manifest
from tests.engine.engine_helpers import make_engine, request, run

NEW_TOKENS = 20


@pytest.mark.parametrize("kind", ["llama", "gpt2", "lstm", "gru", "rnn"])
def test_greedy_tokens_equal_the_torch_reference_in_a_shared_batch(kind, tiny_model):
    folder = tiny_model(kind)
    model = load_tiny_torch_model(folder)
    rng = np.random.default_rng(2)
    prompts = [rng.integers(4, 40, size=length).tolist() for length in (3, 18, 37)]
    expected = [torch_reference_greedy(model, p, NEW_TOKENS) for p in prompts]
    engine = make_engine(folder, warmup=False)

    async def together():
        handles = [engine.submit(request(p, max_new_tokens=NEW_TOKENS, ignore_eos=True)) for p in prompts]
        return await asyncio.gather(*(h.result() for h in handles))

    try:
        results = run(together())
    finally:
        run(engine.stop(5))
    assert [r.outputs[0].token_ids for r in results] == expected


def test_a_row_that_reaches_the_end_of_its_cache_finishes_with_length(tiny_model, tmp_path):
    # The context rule (prompt + new tokens within context_length) keeps requests inside a cache as
    # long as the context; a manifest without a context length leaves only the cache's end to stop them.
    folder = shutil.copytree(tiny_model("llama"), tmp_path / "no-context")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["context_length"] = None
    (folder / "manifest.json").write_text(json.dumps(manifest))
    max_len = read_manifest(folder).onnx["kv_cache"]["max_len"]
    engine = make_engine(folder, warmup=False, max_prompt_tokens=max_len)
    ids = np.random.default_rng(3).integers(4, 40, size=max_len - 8).tolist()

    async def go():
        return await engine.submit(request(ids, max_new_tokens=50, ignore_eos=True)).result()

    try:
        result = run(go())
    finally:
        run(engine.stop(5))
    # The prefill fills max_len - 8 positions; each decode step fills one more, and the token sampled
    # from the last position is still emitted.
    assert result.outputs[0].finish_reason == "length"
    assert result.usage.completion_tokens == 9
