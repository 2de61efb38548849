"""POST /tokenize and /detokenize (vLLM's shapes), and X-Request-Id on every route: accepted, echoed in
the response header and written in the request's log line."""

from __future__ import annotations

import re

import grpc
import httpx
import openai
import pytest

from harness.server_process import ServerProcess
from harness.tiny_models import tiny_prompt
from service.api.generated.seqserve.v1 import inference_pb2 as pb
from service.api.generated.seqserve.v1 import inference_pb2_grpc as pb_grpc
from service.settings import Settings
from tests.api.conftest import CLF_MODEL, GEN_MODEL, RNN_MODEL
from tests.api.sse import events

TEXT = "To be, or not to be, that is the question:\n"
MESSAGES = [{"role": "user", "content": "To be?"}]


def test_tokenize_then_detokenize_round_trips_a_prompt(http: httpx.Client) -> None:
    reply = http.post("/tokenize", json={"model": GEN_MODEL, "prompt": TEXT, "return_token_strs": True})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["tokens"] == tiny_prompt(TEXT) and body["count"] == len(TEXT)
    assert body["max_model_len"] == 128  # the tiny Transformer's context
    assert "".join(body["token_strs"]) == TEXT
    back = http.post("/detokenize", json={"model": GEN_MODEL, "tokens": body["tokens"]})
    assert back.json() == {"prompt": TEXT}


def test_tokenize_covers_chat_messages_recurrent_models_and_classifiers(http: httpx.Client) -> None:
    chat = http.post("/tokenize", json={"model": GEN_MODEL, "messages": MESSAGES}).json()
    # The template's text, and what /v1/chat/completions reports as its prompt tokens.
    assert chat["tokens"] == tiny_prompt("ROMEO:\nTo be?\n\nJULIET:\n")
    usage = http.post(
        "/v1/chat/completions", json={"model": GEN_MODEL, "messages": MESSAGES, "max_tokens": 1}
    ).json()["usage"]
    assert usage["prompt_tokens"] == chat["count"]
    without_heading = http.post(
        "/tokenize", json={"model": GEN_MODEL, "messages": MESSAGES, "add_generation_prompt": False}
    ).json()
    assert without_heading["tokens"] == tiny_prompt("ROMEO:\nTo be?\n\n")
    rnn = http.post("/tokenize", json={"model": RNN_MODEL, "prompt": TEXT}).json()
    # A recurrent model has no context: its prompt limit is the recurrent default.
    assert rnn["tokens"] == tiny_prompt(TEXT)
    assert rnn["max_model_len"] == Settings().recurrent_max_prompt_tokens
    assert http.post("/tokenize", json={"model": CLF_MODEL, "prompt": "To be"}).json()["count"] == 5


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/tokenize", {"model": GEN_MODEL}, 400, "prompt"),
        ("/tokenize", {"model": GEN_MODEL, "prompt": "x", "messages": MESSAGES}, 400, "prompt"),
        ("/tokenize", {"model": RNN_MODEL, "messages": MESSAGES}, 400, "messages"),
        (
            "/tokenize",
            {"model": GEN_MODEL, "messages": [{"role": "robot", "content": "x"}]},
            400,
            "messages.0.role",
        ),
        ("/tokenize", {"model": GEN_MODEL, "prompt": "x", "add_bos": True}, 400, "add_bos"),
        ("/tokenize", {"model": "no-such-model", "prompt": "x"}, 404, "model"),
        ("/detokenize", {"model": GEN_MODEL, "tokens": [5, 10**6]}, 400, "tokens"),
        ("/detokenize", {"model": GEN_MODEL, "tokens": [-1]}, 400, "tokens.0"),
        ("/detokenize", {"model": GEN_MODEL}, 400, "tokens"),
        ("/detokenize", {"model": "no-such-model", "tokens": [1]}, 404, "model"),
    ],
)
def test_token_utility_errors_name_the_field(
    http: httpx.Client, path: str, body: dict, status: int, param: str
) -> None:
    reply = http.post(path, json=body)
    assert reply.status_code == status, reply.text
    assert reply.json()["error"]["param"] == param


def _log_line(server: ServerProcess, request_id: str) -> str:
    lines = [line for line in server.log().splitlines() if f"request_id={request_id} " in line]
    assert len(lines) == 1, server.log()[-3000:]
    return lines[0]


def test_the_request_id_is_echoed_and_logged_on_every_route(
    http: httpx.Client, server: ServerProcess
) -> None:
    calls = {
        "/v1/chat/completions": {"model": GEN_MODEL, "messages": MESSAGES, "max_tokens": 2},
        "/v1/completions": {"model": GEN_MODEL, "prompt": "To be", "max_tokens": 2},
        "/v1/generate": {"model": GEN_MODEL, "prompt": "To be", "params": {"max_tokens": 2}},
        "/v1/sentiment": {"texts": ["To be"]},
        "/tokenize": {"model": GEN_MODEL, "prompt": "To be"},
        "/detokenize": {"model": GEN_MODEL, "tokens": [5]},
    }
    for i, (path, body) in enumerate(calls.items()):
        rid = f"it-{i}/{path.strip('/').replace('/', '.')}"
        reply = http.post(path, json=body, headers={"X-Request-Id": rid})
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-request-id"] == rid
        assert f"route={path} " in _log_line(server, rid)
    # A refusal is logged under the client's id too, with its status.
    reply = http.post(
        "/v1/chat/completions",
        json={"model": RNN_MODEL, "messages": MESSAGES},
        headers={"X-Request-Id": "refused-1"},
    )
    assert reply.status_code == 400 and reply.headers["x-request-id"] == "refused-1"
    assert "status=400" in _log_line(server, "refused-1")
    # Streams carry it in the response header and the chunk ids.
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": GEN_MODEL, "messages": MESSAGES, "max_tokens": 2, "stream": True},
        headers={"X-Request-Id": "stream-1"},
    ) as stream:
        assert stream.headers["x-request-id"] == "stream-1"
        chunks = [e for e in events(stream) if e != "[DONE]"]
    assert {c["id"] for c in chunks} == {"chatcmpl-stream-1"}
    # A body's request_id replaces the header's everywhere.
    body = {"model": GEN_MODEL, "prompt": "To be", "params": {"max_tokens": 1}, "request_id": "from-body"}
    reply = http.post("/v1/generate", json=body, headers={"X-Request-Id": "from-header"})
    assert reply.headers["x-request-id"] == "from-body" and reply.json()["id"] == "from-body"


def test_a_request_id_is_made_when_none_is_given_and_a_bad_one_is_refused(http: httpx.Client) -> None:
    made = {http.get(path).headers["x-request-id"] for path in ("/healthz", "/v1/models", "/no-such-route")}
    assert len(made) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in made)
    for bad in ("a b", "x" * 129, "é".encode()):
        reply = http.get("/v1/models", headers={"X-Request-Id": bad})
        assert reply.status_code == 400 and reply.json()["error"]["param"] == "x-request-id"


def test_the_openai_client_sees_its_request_id(server: ServerProcess) -> None:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=30.0, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=GEN_MODEL, messages=MESSAGES, max_tokens=2, extra_headers={"X-Request-Id": "client-7"}
        )
    assert raw.headers["x-request-id"] == "client-7"
    assert raw.parse().id == "chatcmpl-client-7"


def test_grpc_takes_the_request_id_from_metadata_under_the_same_rule(server: ServerProcess) -> None:
    request = pb.GenerateRequest(model=GEN_MODEL, prompt="To be", params=pb.SamplingParams(max_tokens=1))
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        _, call = stub.Generate.with_call(request, metadata=(("x-request-id", "grpc-9"),), timeout=30)
        assert ("x-request-id", "grpc-9") in call.initial_metadata()
        with pytest.raises(grpc.RpcError) as caught:
            stub.Generate(request, metadata=(("x-request-id", "a b"),), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("x-request-id:")
    assert "route=grpc.Generate" in _log_line(server, "grpc-9")
