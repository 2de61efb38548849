"""load_classifier on the exporter's tiny classifiers: the batcher's probabilities equal torch's."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from harness.tiny_models import load_tiny_torch_model
from service.engine import load_classifier
from service.settings import Settings
from training.export.torch_reference import classifier_probabilities

TEXTS = ["To be, or not to be", "All the world's a stage", "a", "Or to take arms against a sea of troubles."]


@pytest.mark.parametrize("kind", ["rnn_classifier", "transformer_classifier"])
def test_batched_probabilities_equal_torch_one_text_at_a_time(kind, tiny_model):
    folder = tiny_model(kind)
    batcher = load_classifier(folder, Settings(intra_op_threads=1, classifier_max_delay_ms=20))
    model = load_tiny_torch_model(folder)

    async def classify():
        batcher.start()
        try:
            return await batcher.classify(TEXTS)  # one padded batch of different lengths
        finally:
            await batcher.stop()

    results = asyncio.run(classify())
    for text, result in zip(TEXTS, results, strict=True):
        (ids,) = batcher.encode(text)  # a short text: one input
        ids = ids[None, :]
        expected = classifier_probabilities(model, ids, np.ones_like(ids))[0]
        got = [result.probabilities[label] for label in batcher.labels]
        assert got == pytest.approx(expected.tolist(), abs=1e-5)
        assert result.label == batcher.labels[int(np.argmax(expected))]
