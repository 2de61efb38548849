"""An int8 KV cache (GroupQueryAttention with kv_cache_bit_width=8) served in place by the engine.

The reference is the same int8 graph run plainly: `session.run()` with the present outputs fed back
as the next past, no IO binding, no slots. The engine must give exactly its greedy tokens, alone, in
a ragged batch, with n samples sharing one prefill (row copies of int8 rows) and after compaction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from harness.tiny_models import make_int8_kv_model_dir
from service.engine import capacity, read_manifest
from service.engine.kv_cache import KVCacheSpec
from service.engine.loader import build_runner
from service.engine.runtime import open_variant_session
from tests.engine.engine_helpers import generate, make_engine, run
from tests.engine.engine_helpers import request as req

N_NEW = 24


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_int8_kv_model_dir(tmp_path_factory.mktemp("int8kv"))


@pytest.fixture(scope="module")
def engine(int8_dir: Path):
    eng = make_engine(int8_dir, max_slots=4)
    yield eng
    run(eng.stop(5))


def plain_greedy(model_path: Path, prompt: list[int], n_new: int) -> list[int]:
    """Greedy tokens from plain `run()` calls, each step's present fed back as the next past."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    pasts = [i for i in session.get_inputs() if i.name.startswith("past_key_values.")]
    assert {i.type for i in pasts} == {"tensor(int8)"}
    state = {i.name: np.zeros([1, *i.shape[1:]], np.int8) for i in pasts}
    names = [o.name for o in session.get_outputs()]
    ids, length, tokens = list(prompt), 0, []
    for _ in range(n_new):
        length += len(ids)
        feeds = {
            "input_ids": np.array([ids], np.int64),
            "attention_mask": np.ones((1, length), np.int64),
            "position_ids": np.arange(length - len(ids), length, dtype=np.int64)[None, :],
            **state,
        }
        out = dict(zip(names, session.run(None, feeds), strict=True))
        tokens.append(int(np.argmax(out["logits"][0, -1])))
        state = {name: out[name.replace("past_key_values.", "present.")] for name in state}
        ids = [tokens[-1]]
    return tokens


def prompt(seed: int, length: int) -> list[int]:
    return np.random.default_rng(seed).integers(4, 40, size=length).tolist()


def test_the_manifest_dtype_sizes_int8_buffers_and_four_times_the_slots(int8_dir: Path) -> None:
    manifest = read_manifest(int8_dir)
    runner = build_runner(
        manifest, open_variant_session(manifest, "cpu", 1), max_slots=None, kv_budget_bytes=8 << 20
    )
    assert runner.cache.spec.dtype == "int8"
    assert runner.cache.keys[0].dtype == np.int8 and runner.cache.keys[0].host.dtype == np.int8
    as_float = KVCacheSpec(**{**runner.cache.spec.__dict__, "dtype": "float32"})
    assert as_float.bytes_per_slot == 4 * runner.cache.spec.bytes_per_slot
    assert runner.max_slots == capacity.slot_count(None, runner.cache.spec.bytes_per_slot, 8 << 20, "cpu")
    assert runner.max_slots == 4 * capacity.slot_count(None, as_float.bytes_per_slot, 8 << 20, "cpu")


def test_engine_greedy_tokens_equal_the_plain_int8_graph(engine, int8_dir: Path) -> None:
    prompts = [prompt(1, 5), prompt(2, 23), prompt(3, 40)]
    expected = [plain_greedy(int8_dir / "model.onnx", p, N_NEW) for p in prompts]

    async def together():
        handles = [engine.submit(req(p, max_new_tokens=N_NEW, ignore_eos=True)) for p in prompts]
        return [await h.result() for h in handles]

    alone = [run(generate(engine, p, max_new_tokens=N_NEW, ignore_eos=True)) for p in prompts]
    assert [r.outputs[0].token_ids for r in alone] == expected
    assert [r.outputs[0].token_ids for r in run(together())] == expected


def test_n_samples_copy_int8_rows_and_compaction_moves_them(engine, int8_dir: Path) -> None:
    first, second = prompt(4, 30), prompt(5, 9)
    expected_first = plain_greedy(int8_dir / "model.onnx", first, N_NEW)
    expected_second = plain_greedy(int8_dir / "model.onnx", second, 40)

    async def go():
        # The short request finishes first, leaving a hole under the long one's row, which the
        # scheduler then compacts (an int8 row move).
        short = engine.submit(req(first, max_new_tokens=N_NEW, ignore_eos=True, n=2))
        long = engine.submit(req(second, max_new_tokens=40, ignore_eos=True))
        return await short.result(), await long.result()

    short, long = run(go())
    assert [o.token_ids for o in short.outputs] == [expected_first, expected_first]
    assert long.outputs[0].token_ids == expected_second
