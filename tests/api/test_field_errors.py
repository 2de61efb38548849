"""Errors the engine finds (it alone knows the slots, the vocabulary and the context) reach clients as
the same 400 / INVALID_ARGUMENT bodies as the schema's own: the field as each API names it, and its rule.

The expected bodies are the ones the service answered before the engine raised structured errors
(when the API still parsed the field out of the message text): one case per field that took that path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from harness.server_process import ServerProcess
from service.api.generated.seqserve.v1 import inference_pb2 as pb
from service.api.generated.seqserve.v1 import inference_pb2_grpc as pb_grpc
from tests.api.conftest import GEN_MODEL, RNN_MODEL, start_server

# This module's server: 4 slots and 32 queue places (the shared one runs the automatic defaults);
# tiny-gpt2 has 71 token ids and a 128-token context.


@pytest.fixture(scope="module")
def server(api_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("field-errors") / "server.log"
    proc = start_server(api_models_dir, log, max_slots=4, max_queue=32)
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        yield client


LONG = "x" * 200
REST_CASES = [
    ("/v1/completions", {"prompt": "x", "n": 5}, "n", "at most 4 (the engine's slots)"),
    ("/v1/completions", {"prompt": [5, 100_000]}, "prompt", "ids must be in [0, 71)"),
    ("/v1/completions", {"prompt": ""}, "prompt", "must contain at least one token"),
    ("/v1/completions", {"prompt": LONG}, "prompt", "200 tokens, the limit for 'tiny-gpt2' is 128"),
    (
        "/v1/completions",
        {"prompt": [[5], [5] * 200]},
        "prompt",
        "200 tokens, the limit for 'tiny-gpt2' is 128",
    ),
    ("/v1/generate", {"prompt": "x", "params": {"n": 5}}, "params.n", "at most 4 (the engine's slots)"),
    ("/v1/generate", {"prompt_token_ids": [5, 100_000]}, "prompt_token_ids", "ids must be in [0, 71)"),
    ("/v1/generate", {"prompt_token_ids": []}, "prompt_token_ids", "must contain at least one token"),
    ("/v1/generate", {"prompt": ""}, "prompt", "must contain at least one token"),
    ("/v1/generate", {"prompt": LONG}, "prompt", "200 tokens, the limit for 'tiny-gpt2' is 128"),
    (
        "/v1/generate",
        {"prompt_token_ids": [5] * 200},
        "prompt_token_ids",
        "200 tokens, the limit for 'tiny-gpt2' is 128",
    ),
    (
        "/v1/generate",
        {"prompt": "x", "prompt_token_ids": [5]},
        "prompt",
        "give exactly one of prompt and prompt_token_ids",
    ),
    ("/v1/generate", {}, "prompt", "give exactly one of prompt and prompt_token_ids"),
]


@pytest.mark.parametrize(("path", "body", "param", "rule"), REST_CASES)
def test_rest_bodies_name_the_field_as_before(
    http: httpx.Client, path: str, body: dict, param: str, rule: str
) -> None:
    response = http.post(path, json={"model": GEN_MODEL, **body})
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": {"message": f"{param}: {rule}", "type": "invalid_request_error", "param": param, "code": 400}
    }


GRPC_CASES = [
    ({"prompt": "x", "params": pb.SamplingParams(n=5)}, "params.n: at most 4 (the engine's slots)"),
    ({"prompt_token_ids": [5, 100_000]}, "prompt_token_ids: ids must be in [0, 71)"),
    # An empty string is an unset field in proto3: the rule of one prompt, checked where REST checks it.
    ({"prompt": ""}, "prompt: give exactly one of prompt and prompt_token_ids"),
    ({"prompt": LONG}, "prompt: 200 tokens, the limit for 'tiny-gpt2' is 128"),
    ({"prompt_token_ids": [5] * 200}, "prompt_token_ids: 200 tokens, the limit for 'tiny-gpt2' is 128"),
    ({"prompt": "x", "prompt_token_ids": [5]}, "prompt: give exactly one of prompt and prompt_token_ids"),
]


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[pb_grpc.InferenceStub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield pb_grpc.InferenceStub(channel)


@pytest.mark.parametrize(("fields", "details"), GRPC_CASES)
def test_grpc_statuses_name_the_field_as_before(
    stub: pb_grpc.InferenceStub, fields: dict, details: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(pb.GenerateRequest(model=GEN_MODEL, **fields), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == details


# This module's server holds 4 running + 32 waiting requests per model.
def test_more_prompts_than_slots_and_queue_is_a_400_not_a_429(http: httpx.Client) -> None:
    refused = http.post("/v1/completions", json={"model": GEN_MODEL, "prompt": ["x"] * 37, "max_tokens": 1})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "prompt"
    assert "at most 36 prompts per request" in refused.json()["error"]["message"]
    served = http.post("/v1/completions", json={"model": GEN_MODEL, "prompt": ["x"] * 36, "max_tokens": 1})
    assert served.status_code == 200, served.text
    assert len(served.json()["choices"]) == 36


def test_prompt_plus_max_tokens_past_the_context_is_a_400_naming_max_tokens(
    http: httpx.Client, stub: pb_grpc.InferenceStub
) -> None:
    ids = [5] * 8  # tiny-gpt2's context: 128 tokens, so at most 120 new ones
    over = http.post("/v1/completions", json={"model": GEN_MODEL, "prompt": ids, "max_tokens": 121})
    assert over.status_code == 400, over.text
    error = over.json()["error"]
    assert error["param"] == "max_tokens"
    assert error["message"].startswith("max_tokens: at most 120 for this prompt")
    native = http.post("/v1/generate", json={"prompt_token_ids": ids, "params": {"max_tokens": 121}})
    assert native.json()["error"]["param"] == "params.max_tokens"
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(
            pb.GenerateRequest(
                model=GEN_MODEL, prompt_token_ids=ids, params=pb.SamplingParams(max_tokens=121)
            ),
            timeout=30,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("params.max_tokens: at most 120")
    body = {"model": GEN_MODEL, "prompt": ids, "max_tokens": 120, "ignore_eos": True, "temperature": 0}
    fits = http.post("/v1/completions", json=body)
    assert fits.status_code == 200 and fits.json()["usage"]["completion_tokens"] == 120
    # Scoring a prompt (max_tokens 0) needs only the prompt to fit.
    scored = http.post(
        "/v1/completions",
        json={"model": GEN_MODEL, "prompt": [5] * 128, "max_tokens": 0, "echo": True, "logprobs": 0},
    )
    assert scored.status_code == 200, scored.text


def test_recurrent_models_have_no_context_limit(http: httpx.Client) -> None:
    body = {"model": RNN_MODEL, "prompt": "x", "max_tokens": 300, "ignore_eos": True, "temperature": 0}
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 300
