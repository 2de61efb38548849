"""The Transformer decoder graph: parity with torch through the in-place KV cache, and its layout."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from harness.tiny_models import build_tiny_model
from training.export.onnx_decoder import build_decoder, default_max_cache_len
from training.export.ort_decoder import InPlaceDecoder, make_session
from training.export.parity import TOLERANCE, ParityError, check_decoder
from training.export.torch_reference import lm_logits

# (tiny kind, overrides): GQA with 2 kv heads and fused rotary, learned positions, sinusoidal,
# and a head_dim of 8, for which the graph rotates with a RotaryEmbedding node instead of inside GQA.
FLAVOURS = {
    "llama": ("llama", {}),
    "gpt2": ("gpt2", {}),
    "sinusoidal": ("gpt2", {"positions": "sinusoidal"}),
    "llama_head_dim_8": ("llama", {"d_model": 32}),
}


@pytest.fixture(scope="module", params=sorted(FLAVOURS))
def decoder(request: pytest.FixtureRequest) -> tuple[torch.nn.Module, onnx.ModelProto]:
    kind, overrides = FLAVOURS[request.param]
    model, _ = build_tiny_model(kind, seed=1, **overrides)
    return model, build_decoder(model)


def test_decoder_matches_torch_on_prefill_decode_chunks_ragged_batch_and_greedy(decoder) -> None:
    model, graph = decoder
    diffs = check_decoder(model, make_session(graph), seed=3)
    assert set(diffs) == {"prefill", "decode_steps", "chunked_prefill", "ragged_batch", "greedy"}
    assert max(diffs.values()) <= TOLERANCE


def test_only_the_count_of_ones_in_the_mask_matters(decoder) -> None:
    """The engine may hold the mask at a fixed width, or pad it on either side."""
    model, graph = decoder
    session = make_session(graph)
    prompt = list(range(4, 16))
    runs = []
    for pad_left, pad_right in ((0, 0), (0, 5), (3, 0)):
        cache = InPlaceDecoder(session, rows=1)
        cache.step(0, [prompt])
        count = len(prompt) + 1
        mask = np.array([[0] * pad_left + [1] * count + [0] * pad_right], np.int64)
        binding = session.io_binding()
        binding.bind_cpu_input("input_ids", np.array([[20]], np.int64))
        binding.bind_cpu_input("attention_mask", mask)
        binding.bind_cpu_input("position_ids", np.array([[len(prompt)]], np.int64))
        binding.bind_output("logits", "cpu")  # first bound output: get_outputs() follows binding order
        cache.bind_cache(binding, 0, 1)
        session.run_with_iobinding(binding)
        runs.append(binding.get_outputs()[0].numpy()[0, -1])
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])
    assert np.abs(runs[0] - lm_logits(model, [*prompt, 20])[-1]).max() <= TOLERANCE


def test_prefill_into_one_row_leaves_every_other_row_bitwise_unchanged(decoder) -> None:
    _, graph = decoder
    cache = InPlaceDecoder(make_session(graph), rows=3)
    cache.step(0, [[5, 6, 7], [8, 9], [10]])
    before = [k.copy() for k in cache.keys] + [v.copy() for v in cache.values]
    cache.reset(1)
    cache.step(1, [[11, 12, 13, 14]])
    after = cache.keys + cache.values
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old[[0, 2]], new[[0, 2]])
        assert not np.array_equal(old[1], new[1])


def test_parity_check_fails_loudly_when_the_graph_disagrees_with_torch() -> None:
    model, _ = build_tiny_model("llama", seed=1)
    graph = build_decoder(model)
    with torch.no_grad():
        model.blocks[1].mlp.down_proj.weight.mul_(1.01)
    with pytest.raises(ParityError, match="beyond"):
        check_decoder(model, make_session(graph))


def test_tied_embedding_is_stored_once_and_weights_live_inside_the_graph() -> None:
    model, _ = build_tiny_model("llama", seed=1)
    graph = build_decoder(model)
    table_shape = list(model.tok_emb.weight.shape)
    tables = [t for t in graph.graph.initializer if list(t.dims) in (table_shape, table_shape[::-1])]
    assert len(tables) == 1
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in graph.graph.initializer)


def test_cache_capacity_defaults_to_the_position_table_or_at_least_2048() -> None:
    learned, _ = build_tiny_model("gpt2")
    rotary, _ = build_tiny_model("llama")
    assert default_max_cache_len(learned.config) == learned.config.context_length
    assert default_max_cache_len(rotary.config) == 2048
    past = build_decoder(rotary).graph.input[3].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in past] == ["batch", 2, 2048, 16]
    with pytest.raises(ValueError, match="learned positions"):
        build_decoder(learned, max_cache_len=learned.config.context_length + 1)


def test_rotary_decode_continues_past_the_training_context() -> None:
    """Positions beyond context_length are served from the longer rotary table, without error."""
    model, _ = build_tiny_model("llama", seed=1)
    cache = InPlaceDecoder(make_session(build_decoder(model, max_cache_len=160)), rows=1)
    logits = cache.step(0, [list(range(4, 20)) * 8])
    for _ in range(20):
        logits = cache.step(0, [[int(logits[0, -1].argmax())]])
    assert cache.lengths[0] == 148 and np.isfinite(logits).all()
    with pytest.raises(ValueError, match="exceed the cache"):
        cache.step(0, [list(range(4, 20))])
