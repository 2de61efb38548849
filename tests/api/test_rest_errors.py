"""Every client mistake over REST is a 4xx whose JSON body names the field; never a 500."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.api.conftest import BROKEN_MODEL, CLF_MODEL, ENDLESS, GEN_MODEL


def post_json(http: httpx.Client, path: str, body: dict) -> httpx.Response:
    """JSON with ASCII escapes, so a lone surrogate travels as the escape "\\ud800" a client may send."""
    return http.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


# (body, status, param) for POST /v1/completions on the shared server (default slots, max_tokens up to
# ENDLESS["max_tokens"], tiny models with a 128-token context).
COMPLETION_CASES = [
    ({"prompt": "x", "temperature": -1}, 400, "temperature"),
    ({"prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ({"prompt": "x", "top_p": 0}, 400, "top_p"),
    ({"prompt": "x", "top_k": -3}, 400, "top_k"),
    ({"prompt": "x", "min_p": 1.5}, 400, "min_p"),
    ({"prompt": "x", "repetition_penalty": 0}, 400, "repetition_penalty"),
    ({"prompt": "x", "presence_penalty": 3}, 400, "presence_penalty"),
    ({"prompt": "x", "frequency_penalty": -2.5}, 400, "frequency_penalty"),
    ({"prompt": "x", "n": 0}, 400, "n"),
    ({"prompt": "x", "n": 65}, 400, "n"),  # more samples than the API allows (n > slots: test_limits)
    ({"prompt": "x", "logprobs": 21}, 400, "logprobs"),
    ({"prompt": "x", "seed": -1}, 400, "seed"),
    ({"prompt": "x", "max_tokens": -1}, 400, "max_tokens"),
    (
        {"prompt": "x", "max_tokens": ENDLESS["max_tokens"] + 1},
        400,
        "max_tokens",
    ),  # over SEQSERVE_MAX_NEW_TOKENS
    ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),  # 0 only scores, with echo
    ({"prompt": "x", "stop": [""]}, 400, "stop.0"),
    ({"prompt": "x", "stop": ["a"] * 17}, 400, "stop"),
    ({"prompt": "x", "tempurature": 1}, 400, "tempurature"),
    ({"prompt": "x", "suffix": "y"}, 400, "suffix"),
    ({"prompt": "x", "logit_bias": {"5": 101}}, 400, "logit_bias"),
    # Found by schemathesis: above the default max_tokens (16) this was a 500.
    ({"prompt": "x", "min_tokens": 100}, 400, "min_tokens"),
    ({"prompt": ""}, 400, "prompt"),
    ({"prompt": []}, 400, "prompt"),
    ({"prompt": 7}, 400, "prompt"),
    ({"prompt": [5, 100_000]}, 400, "prompt"),  # a token id outside the vocabulary
    ({"prompt": "x" * 200}, 400, "prompt"),  # longer than the model's context
    ({"prompt": "\ud800 lone surrogate"}, 400, "prompt"),
    ({}, 400, "prompt"),
    ({"prompt": "x", "model": "no-such-model"}, 404, "model"),
    ({"prompt": "x", "model": CLF_MODEL}, 400, "model"),
]


@pytest.mark.parametrize(("body", "status", "param"), COMPLETION_CASES)
def test_completion_errors_name_the_field(http: httpx.Client, body: dict, status: int, param: str) -> None:
    response = post_json(http, "/v1/completions", {"model": GEN_MODEL, **body})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["message"].startswith(param)
    assert error["code"] == status


NATIVE_CASES = [
    ({"prompt": "x", "params": {"temperature": -1}}, "params.temperature"),
    ({"prompt": "x", "params": {"bogus": 1}}, "params.bogus"),
    ({"prompt": "x", "params": {"max_tokens": 4, "min_tokens": 9}}, "params.min_tokens"),
    ({"prompt": "x", "prompt_token_ids": [5]}, "prompt"),
    ({"params": {"max_tokens": 1}}, "prompt"),
    ({"prompt_token_ids": []}, "prompt_token_ids"),
    ({"prompt": "x", "stream": "yes please"}, "stream"),
]


@pytest.mark.parametrize(("body", "param"), NATIVE_CASES)
def test_native_generate_errors_name_the_field(http: httpx.Client, body: dict, param: str) -> None:
    response = post_json(http, "/v1/generate", body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


SENTIMENT_CASES = [
    ({"texts": []}, 400, "texts"),
    ({"texts": "not a list"}, 400, "texts"),
    ({"texts": ["\udc80"]}, 400, "texts.0"),
    ({"texts": ["fine"] * 257}, 400, "texts"),
    ({"texts": ["fine"], "model": GEN_MODEL}, 400, "model"),
    ({"texts": ["fine"], "model": "nope"}, 404, "model"),
]


@pytest.mark.parametrize(("body", "status", "param"), SENTIMENT_CASES)
def test_sentiment_errors_name_the_field(http: httpx.Client, body: dict, status: int, param: str) -> None:
    response = post_json(http, "/v1/sentiment", body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/generate", "/v1/sentiment"])
def test_invalid_utf8_bytes_are_a_400_naming_the_field(http: httpx.Client, path: str) -> None:
    field = "texts" if path == "/v1/sentiment" else "prompt"
    raw = (
        b'{"'
        + field.encode()
        + b'": '
        + (b'["ok \xff\xfe"]' if field == "texts" else b'"ok \xff\xfe"')
        + b"}"
    )
    response = http.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].startswith(field)
    assert "UTF-8" in response.json()["error"]["message"]


@pytest.mark.parametrize("raw", [b'{"prompt": ', b"[1, 2]", b"", b"null"])
def test_a_body_that_is_not_a_json_object_is_a_400(http: httpx.Client, raw: bytes) -> None:
    response = http.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "body"


def test_a_model_refused_at_load_answers_503_with_the_reason(http: httpx.Client) -> None:
    response = http.post("/v1/completions", json={"model": BROKEN_MODEL, "prompt": "x"})
    assert response.status_code == 503
    assert "does not match" in response.json()["error"]["message"]


def test_unknown_routes_and_methods_answer_json_errors(http: httpx.Client) -> None:
    missing = http.get("/v1/nothing-here")
    assert missing.status_code == 404 and "error" in missing.json()
    wrong_method = http.get("/v1/completions")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_errors_are_counted_by_status_not_as_server_errors(http: httpx.Client) -> None:
    http.post("/v1/completions", json={"model": GEN_MODEL, "prompt": "x", "top_p": 7})
    text = http.get("/metrics").text
    lines = [line for line in text.splitlines() if line.startswith("seqserve_requests_total{")]
    assert any('status="400"' in line and 'route="/v1/completions"' in line for line in lines)
    assert not any('status="500"' in line for line in lines), json.dumps(lines)
