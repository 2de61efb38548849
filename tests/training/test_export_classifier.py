"""Classifier graphs: probabilities with the softmax inside, unaffected by padding, equal to torch."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from harness.tiny_models import build_tiny_model
from training.export.onnx_classifier import build_rnn_classifier, build_transformer_classifier
from training.export.ort_decoder import make_session
from training.export.parity import TOLERANCE, check_classifier, padded_batch

RNN_VARIANTS = [
    {"cell": "lstm", "bidirectional": True, "pooling": "max"},
    {"cell": "lstm", "bidirectional": True, "pooling": "last", "num_layers": 2},
    {"cell": "gru", "bidirectional": True, "pooling": "mean"},
    {"cell": "gru", "bidirectional": False, "pooling": "last"},
    {"cell": "rnn", "bidirectional": True, "pooling": "max", "num_layers": 2},
]
TRANSFORMER_VARIANTS = [
    {"preset": "llama"},
    {"preset": "gpt2", "n_kv_head": 4},
    {"preset": "llama", "d_model": 32},
    {"preset": "llama", "head_pooling": "mean"},
]


def _session_for(kind: str, overrides: dict) -> tuple[torch.nn.Module, ort.InferenceSession]:
    model, _ = build_tiny_model(kind, seed=4, **overrides)
    build = build_rnn_classifier if kind == "rnn_classifier" else build_transformer_classifier
    return model, make_session(build(model))


@pytest.mark.parametrize("overrides", RNN_VARIANTS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_rnn_classifier_probabilities_match_torch_on_a_padded_batch(overrides: dict) -> None:
    model, session = _session_for("rnn_classifier", overrides)
    assert max(check_classifier(model, session, seed=1).values()) <= TOLERANCE


@pytest.mark.parametrize(
    "overrides", TRANSFORMER_VARIANTS, ids=lambda o: "-".join(str(v) for v in o.values())
)
def test_transformer_classifier_probabilities_match_torch_on_a_padded_batch(overrides: dict) -> None:
    model, session = _session_for("transformer_classifier", overrides)
    assert max(check_classifier(model, session, seed=1).values()) <= TOLERANCE


@pytest.mark.parametrize(
    ("kind", "overrides"),
    [
        ("rnn_classifier", {}),
        ("transformer_classifier", {}),
        ("transformer_classifier", {"head_pooling": "mean"}),
    ],
)
def test_extra_padding_changes_no_probability_and_rows_sum_to_one(kind: str, overrides: dict) -> None:
    model, session = _session_for(kind, overrides)
    ids, mask = padded_batch([9, 3, 14], model_vocab(model), np.random.default_rng(0))
    (narrow,) = session.run(["probabilities"], {"input_ids": ids, "attention_mask": mask})
    wide_ids, wide_mask = np.pad(ids, ((0, 0), (0, 6))), np.pad(mask, ((0, 0), (0, 6)))
    (wide,) = session.run(["probabilities"], {"input_ids": wide_ids, "attention_mask": wide_mask})
    assert narrow.shape == (3, 2)
    np.testing.assert_allclose(narrow.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(wide, narrow, atol=1e-6)
    assert np.abs(narrow[0] - narrow[1]).max() > 1e-3, "different texts should score differently"


def model_vocab(model: torch.nn.Module) -> int:
    return model.lm.config.vocab_size if hasattr(model, "lm") else model.config.vocab_size
