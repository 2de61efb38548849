"""POST /v1/chat/completions and logit_bias through the unmodified `openai` Python client.

The tiny generator carries the committed Shakespeare chat template (tests/api/conftest.py), so a chat
must be exactly the completion of the prompt that template renders, with the template's stop.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import openai
import pytest

from harness.server_process import ServerProcess
from harness.tiny_models import tiny_prompt
from service.api.generated.seqserve.v1 import inference_pb2 as pb
from service.api.generated.seqserve.v1 import inference_pb2_grpc as pb_grpc
from tests.api.conftest import GEN_MODEL, RNN_MODEL, committed_chat_section

MESSAGES = [
    {"role": "system", "content": "A garden at night."},
    {"role": "user", "content": "To be, or not to be?"},
]
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=TIMEOUT, max_retries=0) as c:
        yield c


def rendered_prompt_ids(http: httpx.Client, messages: list[dict]) -> list[int]:
    reply = http.post("/tokenize", json={"model": GEN_MODEL, "messages": messages})
    assert reply.status_code == 200, reply.text
    return reply.json()["tokens"]


def test_the_play_script_template_renders_speakers_and_ends_with_the_assistants_heading(
    http: httpx.Client,
) -> None:
    messages = [
        *MESSAGES,
        {"role": "assistant", "content": "Ay."},
        {"role": "user", "content": "Nay.", "name": "HAMLET"},
    ]
    ids = rendered_prompt_ids(http, messages)
    text = http.post("/detokenize", json={"model": GEN_MODEL, "tokens": ids}).json()["prompt"]
    # The tiny char tokenizer has no "[", "]", "H", "M" or "J": those come back as <|unk|>.
    expected = (
        "[A garden at night.]\n\nROMEO:\nTo be, or not to be?\n\nJULIET:\nAy.\n\nHAMLET:\nNay.\n\nJULIET:\n"
    )
    assert ids == tiny_prompt(expected)
    assert text.endswith("ULIET:\n")


def test_a_chat_is_the_completion_of_the_rendered_prompt_with_the_templates_stop(
    client: openai.OpenAI, http: httpx.Client
) -> None:
    chat = client.chat.completions.create(model=GEN_MODEL, messages=MESSAGES, max_tokens=24, temperature=0)
    completion = client.completions.create(
        model=GEN_MODEL,
        prompt=rendered_prompt_ids(http, MESSAGES),
        max_tokens=24,
        temperature=0,
        stop=committed_chat_section()["stop"],
    )
    (choice,) = chat.choices
    assert chat.object == "chat.completion" and chat.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant"
    assert choice.message.content == completion.choices[0].text
    assert choice.finish_reason == completion.choices[0].finish_reason
    assert chat.usage.prompt_tokens == completion.usage.prompt_tokens
    assert chat.usage.completion_tokens == completion.usage.completion_tokens


def test_streamed_chat_chunks_join_to_the_unary_reply_and_end_with_usage(client: openai.OpenAI) -> None:
    unary = client.chat.completions.create(model=GEN_MODEL, messages=MESSAGES, max_tokens=12, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model=GEN_MODEL,
            messages=MESSAGES,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == unary.choices[0].message.content
    assert finishes == [unary.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == unary.usage.total_tokens


def test_n_samples_with_chat_logprobs(client: openai.OpenAI) -> None:
    chat = client.chat.completions.create(
        model=GEN_MODEL,
        messages=MESSAGES,
        max_completion_tokens=6,
        temperature=1.0,
        seed=4,
        n=2,
        logprobs=True,
        top_logprobs=2,
        stop=[],  # an explicit empty list turns the template's stop off
    )
    assert sorted(c.index for c in chat.choices) == [0, 1]
    for choice in chat.choices:
        content = choice.logprobs.content
        assert len(content) == 6 and choice.finish_reason == "length"
        assert "".join(entry.token for entry in content) == choice.message.content
        for entry in content:
            assert len(entry.top_logprobs) == 2 and entry.logprob <= 0
            assert bytes(entry.bytes).decode() == entry.token
    again = client.chat.completions.create(
        model=GEN_MODEL, messages=MESSAGES, max_completion_tokens=6, temperature=1.0, seed=4, n=2, stop=[]
    )
    assert [c.message.content for c in again.choices] == [c.message.content for c in chat.choices]


def test_a_model_without_a_chat_template_is_a_bad_request_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=RNN_MODEL, messages=MESSAGES, max_tokens=4)
    assert caught.value.body["param"] == "model"
    assert RNN_MODEL in caught.value.body["message"] and "chat template" in caught.value.body["message"]


@pytest.mark.parametrize(
    ("request_fields", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "messages.0.role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages.0.content",
        ),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"extra_body": {"best_of": 2}}, "best_of"),
        ({"logit_bias": {"x": 1}}, "logit_bias"),
        ({"extra_body": {"min_tokens": 100}}, "min_tokens"),  # above max_tokens; found by schemathesis
    ],
)
def test_bad_chat_requests_name_the_field(client: openai.OpenAI, request_fields: dict, param: str) -> None:
    fields = {"model": GEN_MODEL, "messages": MESSAGES, "max_tokens": 4, **request_fields}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**fields)
    assert caught.value.body["param"] == param, caught.value.body


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)


# ---- logit_bias -----------------------------------------------------------------------------------
def test_a_plus_100_bias_forces_a_token_on_completions_and_chat(client: openai.OpenAI) -> None:
    (forced,) = tiny_prompt("q")
    completion = client.completions.create(
        model=GEN_MODEL, prompt="To be", max_tokens=5, temperature=0.9, seed=1, logit_bias={str(forced): 100}
    )
    assert completion.choices[0].text == "qqqqq"
    chat = client.chat.completions.create(
        model=GEN_MODEL, messages=MESSAGES, max_tokens=5, temperature=0, logit_bias={str(forced): 100}
    )
    assert chat.choices[0].message.content == "qqqqq"


def test_a_minus_100_bias_bans_a_token(client: openai.OpenAI) -> None:
    greedy = client.completions.create(model=GEN_MODEL, prompt="To be", max_tokens=1, temperature=0)
    (favourite,) = tiny_prompt(greedy.choices[0].text)
    banned = client.completions.create(
        model=GEN_MODEL, prompt="To be", max_tokens=1, temperature=0, logit_bias={str(favourite): -100}
    )
    assert banned.choices[0].text != greedy.choices[0].text
    sampled = client.completions.create(
        model=GEN_MODEL,
        prompt="To be",
        max_tokens=64,
        temperature=1.5,
        seed=2,
        logit_bias={str(favourite): -100},
        extra_body={"ignore_eos": True},
    )
    assert greedy.choices[0].text not in sampled.choices[0].text


@pytest.mark.parametrize("bias", [{"abc": 1}, {"5": 100.5}, {"5": "high"}, {"99999": 1}])
def test_invalid_logit_bias_is_a_bad_request_naming_it(client: openai.OpenAI, bias: dict) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=GEN_MODEL, prompt="To be", max_tokens=2, logit_bias=bias)
    assert caught.value.body["param"] == "logit_bias"


def test_logit_bias_over_native_rest_and_grpc(http: httpx.Client, server: ServerProcess) -> None:
    (forced,) = tiny_prompt("q")
    body = {
        "model": GEN_MODEL,
        "prompt": "To be",
        "params": {"max_tokens": 3, "logit_bias": {str(forced): 100}},
    }
    assert http.post("/v1/generate", json=body).json()["completions"][0]["text"] == "qqq"
    body["params"]["logit_bias"] = {"99999": 1}
    reply = http.post("/v1/generate", json=body)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "params.logit_bias"
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        params = pb.SamplingParams(max_tokens=3, logit_bias={forced: 100.0})
        reply = stub.Generate(
            pb.GenerateRequest(model=GEN_MODEL, prompt="To be", params=params), timeout=TIMEOUT
        )
        assert reply.completions[0].text == "qqq"
        params = pb.SamplingParams(max_tokens=3, logit_bias={99999: 1.0})
        with pytest.raises(grpc.RpcError) as caught:
            stub.Generate(pb.GenerateRequest(model=GEN_MODEL, prompt="To be", params=params), timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details().startswith("params.logit_bias:")


def test_chat_takes_structured_outputs_like_completions(client: openai.OpenAI) -> None:
    chat = client.chat.completions.create(
        model=GEN_MODEL,
        messages=MESSAGES,
        max_tokens=8,
        temperature=1.0,
        seed=3,
        extra_body={"structured_outputs": {"choice": ["yes", "no"]}},
    )
    assert chat.choices[0].message.content in {"yes", "no"} and chat.choices[0].finish_reason == "stop"
    plain = client.chat.completions.create(
        model=GEN_MODEL, messages=MESSAGES, max_tokens=3, temperature=0, response_format={"type": "text"}
    )
    assert plain.choices[0].finish_reason in {"stop", "length"} and plain.usage.completion_tokens >= 1
