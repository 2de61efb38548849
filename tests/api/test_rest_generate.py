"""POST /v1/generate over a real server: greedy output equals torch's, streams equal unary results,
sampling is reproducible by seed, stop strings, logprobs and prompt scoring behave."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from harness.tiny_models import tiny_prompt, torch_reference_greedy
from tests.api.conftest import GEN_MODEL, RNN_MODEL
from tests.api.sse import collect

PROMPT = "To be, or not"


def generate(http: httpx.Client, **body: object) -> dict:
    response = http.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(("model", "kind"), [(GEN_MODEL, "gpt2"), (RNN_MODEL, "lstm")])
def test_greedy_generation_equals_the_torch_reference(
    http: httpx.Client, tiny_model_dir: Callable[..., Path], model: str, kind: str
) -> None:
    params = {"max_tokens": 24, "temperature": 0, "ignore_eos": True}
    body = generate(http, model=model, prompt=PROMPT, params=params)
    expected = torch_reference_greedy(tiny_model_dir(kind), tiny_prompt(PROMPT), 24)
    (completion,) = body["completions"]
    assert body["model"] == model
    assert body["prompt_token_ids"] == tiny_prompt(PROMPT)
    assert completion["token_ids"] == expected
    assert completion["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": len(tiny_prompt(PROMPT)),
        "completion_tokens": 24,
        "total_tokens": 37,
    }


def test_prompt_token_ids_give_the_same_result_as_the_text(http: httpx.Client) -> None:
    params = {"max_tokens": 12, "temperature": 0}
    by_text = generate(http, prompt=PROMPT, params=params)
    by_ids = generate(http, prompt_token_ids=tiny_prompt(PROMPT), params=params)
    assert by_ids["completions"] == by_text["completions"]


def test_the_default_model_serves_requests_without_a_model_field(http: httpx.Client) -> None:
    assert generate(http, prompt=PROMPT, params={"max_tokens": 2})["model"] == GEN_MODEL


def test_streamed_tokens_equal_the_unary_result(http: httpx.Client) -> None:
    params = {"max_tokens": 20, "temperature": 0, "logprobs": 2}
    unary = generate(http, model=GEN_MODEL, prompt=PROMPT, params=params)["completions"][0]
    events = collect(
        http, "/v1/generate", {"model": GEN_MODEL, "prompt": PROMPT, "params": params, "stream": True}
    )
    assert events[-1] == "[DONE]"
    messages = events[:-1]
    tokens = [m for m in messages if "finish_reason" not in m]
    (finish,) = [m for m in messages if "finish_reason" in m]
    assert [t for m in tokens for t in m["token_ids"]] == unary["token_ids"]
    assert "".join(m["text"] for m in messages) == unary["text"]
    # A lagging stream gets several tokens per message: flattened, they are the unary logprobs.
    assert [lp for m in tokens for lp in m["logprobs"]] == unary["logprobs"]
    assert finish["finish_reason"] == unary["finish_reason"]
    assert finish["usage"]["completion_tokens"] == 20


def test_seeded_sampling_is_reproducible_and_samples_differ(http: httpx.Client) -> None:
    params = {"max_tokens": 16, "temperature": 1.5, "n": 3, "seed": 1234, "ignore_eos": True}
    first = generate(http, model=GEN_MODEL, prompt=PROMPT, params=params)["completions"]
    again = generate(http, model=GEN_MODEL, prompt=PROMPT, params=params)["completions"]
    assert [c["token_ids"] for c in first] == [c["token_ids"] for c in again]
    assert [c["index"] for c in first] == [0, 1, 2]
    assert len({tuple(c["token_ids"]) for c in first}) > 1


def test_a_stop_string_ends_the_text_before_it(http: httpx.Client) -> None:
    params = {"max_tokens": 30, "temperature": 0, "ignore_eos": True}
    full = generate(http, model=GEN_MODEL, prompt=PROMPT, params=params)["completions"][0]["text"]
    stop = next(full[i : i + 2] for i in range(3, len(full) - 2) if full[i : i + 2].strip())
    stopped = generate(http, model=GEN_MODEL, prompt=PROMPT, params={**params, "stop": [stop]})[
        "completions"
    ][0]
    assert stopped["text"] == full[: full.index(stop)]
    assert stopped["finish_reason"] == "stop"
    assert stopped["stop_reason"] == stop


def test_logprobs_name_the_chosen_token_and_its_top_alternatives(http: httpx.Client) -> None:
    params = {"max_tokens": 8, "temperature": 0, "logprobs": 3}
    (completion,) = generate(http, model=GEN_MODEL, prompt=PROMPT, params=params)["completions"]
    assert len(completion["logprobs"]) == 8
    for token_id, entry in zip(completion["token_ids"], completion["logprobs"], strict=True):
        top = entry["top_logprobs"]
        assert entry["token_id"] == token_id
        assert len(top) == 3
        assert top[0]["token_id"] == token_id  # greedy picks the most likely token
        assert top[0]["logprob"] == pytest.approx(entry["logprob"])
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert entry["logprob"] <= 0.0
        assert sum(math.exp(t["logprob"]) for t in top) <= 1.0 + 1e-6


def test_max_tokens_zero_with_prompt_logprobs_scores_the_prompt_only(http: httpx.Client) -> None:
    params = {"max_tokens": 0, "prompt_logprobs": True}
    body = generate(http, model=GEN_MODEL, prompt=PROMPT, params=params)
    (completion,) = body["completions"]
    assert completion["text"] == "" and completion["token_ids"] == []
    scores = body["prompt_logprobs"]
    assert [s["token_id"] for s in scores] == tiny_prompt(PROMPT)
    assert scores[0]["logprob"] is None
    assert all(s["logprob"] < 0.0 for s in scores[1:])
    assert body["usage"]["completion_tokens"] == 0


@pytest.mark.parametrize(
    "params",
    [
        {"logprobs": 5, "top_k": 2, "temperature": 1.0},  # alternatives the filter removed (-inf)
        {"logprobs": 3, "temperature": 1e-300},  # dividing by it would overflow: treated as greedy
        {"logprobs": 3, "temperature": 1e300},
    ],
)
def test_extreme_sampling_settings_still_give_valid_json(http: httpx.Client, params: dict) -> None:
    body = generate(http, model=GEN_MODEL, prompt=PROMPT, params={"max_tokens": 4, "seed": 1, **params})
    for entry in body["completions"][0]["logprobs"]:
        assert entry["logprob"] is None or math.isfinite(entry["logprob"])
        assert all(math.isfinite(t["logprob"]) for t in entry["top_logprobs"])
    completion = http.post(
        "/v1/completions",
        json={"model": GEN_MODEL, "prompt": PROMPT, "max_tokens": 4, "seed": 1, **params},
    )
    assert completion.status_code == 200, completion.text
