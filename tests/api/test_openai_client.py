"""POST /v1/completions and GET /v1/models through the unmodified `openai` Python client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from harness.server_process import ServerProcess
from harness.tiny_models import tiny_prompt
from tests.api.conftest import BROKEN_MODEL, CLF_MODEL, GEN_MODEL, RNN_MODEL

PROMPT = "To be, or not"


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=30.0, max_retries=0) as c:
        yield c


def native_greedy(http: httpx.Client, prompt: str, max_tokens: int) -> dict:
    body = {"model": GEN_MODEL, "prompt": prompt, "params": {"max_tokens": max_tokens, "temperature": 0}}
    return http.post("/v1/generate", json=body).json()["completions"][0]


def test_completion_matches_the_native_api(client: openai.OpenAI, http: httpx.Client) -> None:
    completion = client.completions.create(model=GEN_MODEL, prompt=PROMPT, max_tokens=10, temperature=0)
    (choice,) = completion.choices
    native = native_greedy(http, PROMPT, 10)
    assert completion.object == "text_completion"
    assert completion.model == GEN_MODEL
    assert choice.text == native["text"]
    assert choice.finish_reason == native["finish_reason"]
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == len(tiny_prompt(PROMPT))
    assert completion.usage.completion_tokens == len(native["token_ids"])


def test_streaming_chunks_join_to_the_unary_text_and_end_with_usage(client: openai.OpenAI) -> None:
    unary = client.completions.create(model=GEN_MODEL, prompt=PROMPT, max_tokens=12, temperature=0)
    stream = client.completions.create(
        model=GEN_MODEL,
        prompt=PROMPT,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)  # the client stops at `data: [DONE]`
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == unary.choices[0].text
    assert finishes == [unary.choices[0].finish_reason]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == unary.usage.total_tokens


def test_echo_with_logprobs_and_zero_max_tokens_scores_the_prompt(client: openai.OpenAI) -> None:
    scored = client.completions.create(model=GEN_MODEL, prompt=PROMPT, max_tokens=0, echo=True, logprobs=0)
    (choice,) = scored.choices
    assert choice.text == PROMPT
    assert choice.logprobs is not None
    assert "".join(choice.logprobs.tokens) == PROMPT
    assert choice.logprobs.token_logprobs[0] is None
    assert all(lp < 0 for lp in choice.logprobs.token_logprobs[1:])
    assert choice.logprobs.text_offset == list(range(len(PROMPT)))
    assert scored.usage.completion_tokens == 0


def test_scoring_a_generated_token_gives_the_logprob_it_was_generated_with(client: openai.OpenAI) -> None:
    generated = client.completions.create(
        model=GEN_MODEL, prompt=PROMPT, max_tokens=1, temperature=0, logprobs=1
    )
    token = generated.choices[0].logprobs.tokens[0]
    generated_lp = generated.choices[0].logprobs.token_logprobs[0]
    scored = client.completions.create(
        model=GEN_MODEL, prompt=PROMPT + token, max_tokens=0, echo=True, logprobs=0
    )
    assert scored.choices[0].logprobs.token_logprobs[-1] == pytest.approx(generated_lp, abs=1e-4)


def test_streamed_echo_sends_the_prompt_first(client: openai.OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model=GEN_MODEL, prompt=PROMPT, max_tokens=4, temperature=0, echo=True, stream=True
        )
    )
    assert chunks[0].choices[0].text == PROMPT
    unary = client.completions.create(model=GEN_MODEL, prompt=PROMPT, max_tokens=4, temperature=0, echo=True)
    assert "".join(c.choices[0].text for c in chunks) == unary.choices[0].text


def test_a_batch_of_prompts_with_n_samples_gives_indexed_choices(client: openai.OpenAI) -> None:
    completion = client.completions.create(
        model=RNN_MODEL, prompt=["To be", "the question"], n=2, max_tokens=6, temperature=0, seed=3
    )
    choices = sorted(completion.choices, key=lambda c: c.index)
    assert [c.index for c in choices] == [0, 1, 2, 3]
    # Greedy: both samples of one prompt agree; the two prompts continue differently.
    assert choices[0].text == choices[1].text
    assert choices[2].text == choices[3].text
    single = client.completions.create(model=RNN_MODEL, prompt="the question", max_tokens=6, temperature=0)
    assert choices[2].text == single.choices[0].text
    assert completion.usage.prompt_tokens == len(tiny_prompt("To be")) + len(tiny_prompt("the question"))


def test_extension_parameters_pass_through_extra_body(client: openai.OpenAI) -> None:
    request = {
        "model": GEN_MODEL,
        "prompt": PROMPT,
        "max_tokens": 8,
        "temperature": 0.8,
        "seed": 5,
        "stop": ["\n"],
        "presence_penalty": 0.5,
        "frequency_penalty": 0.5,
        "extra_body": {"top_k": 5, "min_p": 0.05, "repetition_penalty": 1.2},
    }
    completion = client.completions.create(**request)
    again = client.completions.create(**request)
    assert completion.choices[0].text == again.choices[0].text
    assert "\n" not in completion.choices[0].text


def test_invalid_parameters_raise_the_clients_bad_request_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=GEN_MODEL, prompt=PROMPT, temperature=-1)
    assert caught.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt=PROMPT)


def test_models_list_shows_every_model_and_why_one_is_not_served(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {GEN_MODEL, RNN_MODEL, CLF_MODEL, BROKEN_MODEL} <= set(models)
    assert models[GEN_MODEL].model_extra["ready"] is True
    assert models[GEN_MODEL].model_extra["task"] == "generate"
    assert models[CLF_MODEL].model_extra["labels"] == ["negative", "positive"]
    broken = models[BROKEN_MODEL].model_extra
    assert broken["ready"] is False and broken["state"] == "failed"
    assert "does not match" in broken["error"]
    assert client.models.retrieve(GEN_MODEL).id == GEN_MODEL
