"""float16 weight storage: the file shrinks; the graph computes exactly what the rounded torch model does."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from harness.tiny_models import build_tiny_model
from training.export.half_storage import round_weights_to_float16, store_weights_as_float16
from training.export.onnx_classifier import build_rnn_classifier, build_transformer_classifier
from training.export.ort_decoder import make_session
from training.export.parity import TOLERANCE, check_classifier


@pytest.mark.parametrize("kind", ["rnn_classifier", "transformer_classifier"])
def test_rounded_classifier_stored_as_float16_matches_torch_at_half_the_size(kind: str) -> None:
    model, _ = build_tiny_model(kind, seed=4)
    round_weights_to_float16(model.eval())
    build = build_rnn_classifier if kind == "rnn_classifier" else build_transformer_classifier
    full = build(model)
    half = build(model)
    rewritten = store_weights_as_float16(half)
    assert rewritten > 0
    assert half.ByteSize() < 0.6 * full.ByteSize()
    assert max(check_classifier(model, make_session(half), seed=1).values()) <= TOLERANCE
    inputs = {"input_ids": np.array([[5, 9, 2]]), "attention_mask": np.ones((1, 3), dtype=np.int64)}
    (from_half,) = make_session(half).run(None, inputs)
    np.testing.assert_array_equal(from_half, make_session(full).run(None, inputs)[0])


def test_rounding_touches_parameters_only_and_is_idempotent() -> None:
    model, _ = build_tiny_model("transformer_classifier", seed=2)
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    round_weights_to_float16(model)
    once = {name: p.clone() for name, p in model.named_parameters()}
    round_weights_to_float16(model)
    for name, p in model.named_parameters():
        assert torch.equal(p, once[name])
        assert torch.equal(p, p.half().float())
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name])


def test_values_float16_would_change_stay_float32() -> None:
    exact = np.arange(2048, dtype=np.float32).reshape(32, 64) / 8  # representable in float16
    inexact = np.full((32, 64), 0.1, dtype=np.float32)  # 0.1 is not
    huge = np.full((32, 64), 1e6, dtype=np.float32)  # out of float16's range
    named = [(exact, "exact"), (inexact, "inexact"), (huge, "huge")]
    inits = [numpy_helper.from_array(array, name) for array, name in named]
    small = numpy_helper.from_array(np.ones(4, dtype=np.float32), "small")
    graph = helper.make_graph([], "g", [], [], [*inits, small])
    model = helper.make_model(graph)
    assert store_weights_as_float16(model) == 1
    types = {t.name: t.data_type for t in model.graph.initializer}
    assert types == {
        "exact.float16": TensorProto.FLOAT16,
        "inexact": TensorProto.FLOAT,
        "huge": TensorProto.FLOAT,
        "small": TensorProto.FLOAT,
    }
    (cast,) = model.graph.node
    assert (cast.op_type, list(cast.input), list(cast.output)) == ("Cast", ["exact.float16"], ["exact"])
    onnx.checker.check_model(model)
