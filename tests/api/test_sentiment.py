"""POST /v1/sentiment: a label and every label's probability per text, batched with other callers."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import CLF_MODEL, RNN_CLF_MODEL

TEXTS = ["a fine film", "dull, slow and far too long", "To be, or not to be"]


def classify(http: httpx.Client, **body: object) -> dict:
    response = http.post("/v1/sentiment", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_each_text_gets_the_most_likely_label_and_a_distribution(http: httpx.Client) -> None:
    body = classify(http, texts=TEXTS)
    assert body["model"] == CLF_MODEL  # SEQSERVE_DEFAULT_CLASSIFY_MODEL
    assert len(body["results"]) == len(TEXTS)
    for result in body["results"]:
        probs = result["probabilities"]
        assert set(probs) == {"negative", "positive"}
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert result["label"] == max(probs, key=probs.get)


@pytest.mark.parametrize("model", [CLF_MODEL, RNN_CLF_MODEL])
def test_a_text_scores_the_same_alone_and_in_a_batch(http: httpx.Client, model: str) -> None:
    batch = classify(http, model=model, texts=TEXTS)["results"]
    for text, in_batch in zip(TEXTS, batch, strict=True):
        (alone,) = classify(http, model=model, texts=[text])["results"]
        assert alone["label"] == in_batch["label"]
        assert alone["probabilities"] == pytest.approx(in_batch["probabilities"], abs=1e-5)


def test_the_request_id_header_is_echoed_and_used(http: httpx.Client) -> None:
    response = http.post("/v1/sentiment", json={"texts": ["fine"]}, headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert response.json()["id"] == "abc-123"
