"""POST /v1/sentiment: a label and every label's probability per text, batched with other callers."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import CLF_MODEL, RNN_CLF_MODEL, WINDOWED_CLF_MODEL

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


# ---- long texts (windows), limits, and texts with nothing to classify ----------------------------------
LONG = "a fine film, though slow; the ending makes up for it."  # about 9 windows of 7 ids


def sentiment(http: httpx.Client, texts: list[str], model: str = WINDOWED_CLF_MODEL) -> httpx.Response:
    return http.post("/v1/sentiment", json={"model": model, "texts": texts})


def test_long_and_short_texts_in_one_request_each_get_what_they_get_alone(http: httpx.Client) -> None:
    texts = ["fine", LONG, "dull, slow", LONG[:40]]
    together = classify(http, model=WINDOWED_CLF_MODEL, texts=texts)["results"]
    for text, in_batch in zip(texts, together, strict=True):
        (alone,) = classify(http, model=WINDOWED_CLF_MODEL, texts=[text])["results"]
        assert alone["label"] == in_batch["label"]
        assert alone["probabilities"] == pytest.approx(in_batch["probabilities"], abs=1e-5)


def test_a_long_text_is_read_whole_not_cut_to_its_head(http: httpx.Client) -> None:
    """Two texts that share their first window but end differently must score differently."""
    head = LONG[:30]
    a, b = classify(http, model=WINDOWED_CLF_MODEL, texts=[head + " awful", head + " wonderful lovely"])[
        "results"
    ]
    assert a["probabilities"] != pytest.approx(b["probabilities"], abs=1e-6)


@pytest.mark.parametrize("bad", ["", "   \n\t", "?!... --", "   ,"])
def test_a_text_without_a_letter_or_digit_is_a_400_naming_it(http: httpx.Client, bad: str) -> None:
    response = sentiment(http, ["a fine film", bad])
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "texts[1]"


def test_too_many_windows_in_one_text_is_a_413_naming_it(http: httpx.Client) -> None:
    response = sentiment(http, ["fine", "word " * 400])  # far more than 16 windows of 7 ids
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["param"] == "texts[1]" and "windows" in error["message"]
