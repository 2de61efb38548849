"""Recurrent LM graphs: the contract's state names, and parity with torch for every cell."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.tiny_models import build_tiny_model
from training.export.onnx_recurrent import build_recurrent_lm
from training.export.ort_decoder import make_session
from training.export.parity import TOLERANCE, ParityError, check_recurrent, run_recurrent
from training.export.torch_reference import lm_logits


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("tie_weights", [False, True])
def test_recurrent_graph_matches_torch_on_prefill_decode_ragged_rows_and_greedy(
    cell: str, tie_weights: bool
) -> None:
    overrides = {"embed_dim": 64, "tie_weights": True} if tie_weights else {}
    model, _ = build_tiny_model(cell, seed=2, **overrides)
    diffs = check_recurrent(model, make_session(build_recurrent_lm(model)), seed=5)
    assert set(diffs) == {"prefill", "decode_steps", "ragged_batch", "greedy"}
    assert max(diffs.values()) <= TOLERANCE


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_graph_has_the_contract_state_inputs_and_outputs(cell: str) -> None:
    model, _ = build_tiny_model(cell)
    session = make_session(build_recurrent_lm(model))
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    state = [model.config.num_layers, "batch", model.config.hidden_size]
    if cell == "lstm":
        assert inputs == {"input_ids": ["batch", "sequence_length"], "state_h": state, "state_c": state}
        assert outputs == ["logits", "state_h_out", "state_c_out"]
    else:
        assert inputs == {"input_ids": ["batch", "sequence_length"], "state_h": state}
        assert outputs == ["logits", "state_h_out"]


def test_state_out_carries_the_sequence_across_calls() -> None:
    """Prefilling in two calls through state_h/state_c_out equals one call over the whole prompt."""
    model, _ = build_tiny_model("lstm", seed=3)
    session = make_session(build_recurrent_lm(model))
    prompt = list(range(4, 30))
    _, state = run_recurrent(session, [prompt[:10]], None)
    logits, _ = run_recurrent(session, [prompt[10:]], state)
    np.testing.assert_allclose(logits[0], lm_logits(model, prompt)[10:], atol=TOLERANCE)


def test_recurrent_parity_check_fails_when_gates_disagree() -> None:
    model, _ = build_tiny_model("gru", seed=2)
    graph = build_recurrent_lm(model)
    with torch.no_grad():
        model.layers[0].bias_hh_l0[: model.config.hidden_size].add_(0.5)  # the reset gate only
    with pytest.raises(ParityError):
        check_recurrent(model, make_session(graph))
