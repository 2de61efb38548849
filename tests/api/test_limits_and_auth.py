"""A server with an API key, JSON logs and tight limits: one slot, no queue, a 2 KiB body, 16 prompt
tokens (n > slots is 400).

Auth guards REST and gRPC but not the probes; a full queue is 429 with Retry-After (gRPC:
RESOURCE_EXHAUSTED); a large body is 413; prompts over the configured limit are 400; each request
leaves one JSON log line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import openai
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.metrics_reader import wait_for
from harness.server_process import ServerProcess
from service.api.generated.inference import grpc_predict_v2_pb2 as oip_pb
from service.api.generated.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from service.api.generated.seqserve.v1 import inference_pb2 as pb
from service.api.generated.seqserve.v1 import inference_pb2_grpc as pb_grpc
from tests.api.conftest import ENDLESS, GEN_MODEL, RNN_MODEL, copy_model, start_server
from tests.api.sse import events

KEY = "test-key-123"
AUTH = {"authorization": f"Bearer {KEY}"}
GRPC_AUTH = (("authorization", f"Bearer {KEY}"),)


@pytest.fixture(scope="module")
def limited(api_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("limited-models")
    for name in (GEN_MODEL, RNN_MODEL):
        copy_model(api_models_dir / name, root / name, name)
    proc = start_server(
        root,
        root.parent / "limited.log",
        api_key=KEY,
        max_slots=1,
        max_queue=0,
        max_body_bytes=2048,
        max_prompt_tokens=16,
        max_new_tokens=ENDLESS["max_tokens"],
        retry_after_s=3,
        log_format="json",
    )
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def client(limited: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=limited.url, timeout=30.0, headers=AUTH) as c:
        yield c


@pytest.fixture(scope="module")
def channel(limited: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(limited.grpc_target) as ch:
        yield ch


def test_rest_needs_the_bearer_key_but_probes_and_metrics_do_not(limited: ServerProcess) -> None:
    body = {"model": GEN_MODEL, "prompt": "To be", "max_tokens": 2}
    with httpx.Client(base_url=limited.url, timeout=30.0) as anonymous:
        for method, path, payload in [
            ("GET", "/v1/models", None),
            ("POST", "/v1/completions", body),
            ("POST", "/v1/generate", {"prompt": "To be"}),
            ("POST", "/v1/sentiment", {"texts": ["x"]}),
            ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
            ("POST", "/tokenize", {"prompt": "x"}),
            ("POST", "/detokenize", {"tokens": [1]}),
        ]:
            for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": KEY}):
                response = anonymous.request(method, path, json=payload, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.headers["www-authenticate"] == "Bearer"
                assert response.json()["error"]["type"] == "authentication_error"
        for path in ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"):
            assert anonymous.get(path).status_code == 200
        assert anonymous.post("/v1/completions", json=body, headers=AUTH).status_code == 200
        v2 = anonymous.get("/v2/models/any")  # the Open Inference Protocol's error shape under /v2
        assert v2.status_code == 401 and isinstance(v2.json()["error"], str)


def test_the_api_description_stays_public_and_says_which_operations_need_the_key(
    limited: ServerProcess,
) -> None:
    """Decision: /openapi.json and /docs hold no data or model state, and they are how a client finds
    out what to send (the key included), so like the probes they need no key."""
    with httpx.Client(base_url=limited.url, timeout=30.0) as anonymous:
        schema = anonymous.get("/openapi.json")
        assert schema.status_code == 200
        assert anonymous.get("/docs").status_code == 200
        refused = anonymous.get("/v1/models", headers={"X-Request-Id": "no-key-1"})
    assert refused.status_code == 401 and refused.headers["x-request-id"] == "no-key-1"
    spec = schema.json()
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert spec["paths"]["/v1/chat/completions"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]
    body = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/ChatCompletionBody"}


def test_grpc_needs_the_key_in_metadata_but_health_does_not(channel: grpc.Channel) -> None:
    stub = pb_grpc.InferenceStub(channel)
    request = pb.GenerateRequest(model=GEN_MODEL, prompt="To be", params=pb.SamplingParams(max_tokens=2))
    for metadata in ((), (("authorization", "Bearer wrong"),)):
        with pytest.raises(grpc.RpcError) as caught:
            stub.Generate(request, metadata=metadata, timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert stub.Generate(request, metadata=GRPC_AUTH, timeout=30).usage.completion_tokens == 2
    v2 = oip_grpc.GRPCInferenceServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        v2.ServerMetadata(oip_pb.ServerMetadataRequest(), timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert v2.ServerReady(oip_pb.ServerReadyRequest(), metadata=GRPC_AUTH, timeout=30).ready
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_the_openai_client_authenticates_with_its_api_key(limited: ServerProcess) -> None:
    with openai.OpenAI(base_url=f"{limited.url}/v1", api_key=KEY, timeout=30.0, max_retries=0) as good:
        assert (
            good.completions.create(model=GEN_MODEL, prompt="To be", max_tokens=2).usage.completion_tokens
            == 2
        )
    bad = openai.OpenAI(base_url=f"{limited.url}/v1", api_key="wrong", timeout=30.0, max_retries=0)
    with bad, pytest.raises(openai.AuthenticationError):
        bad.completions.create(model=GEN_MODEL, prompt="To be", max_tokens=2)


def test_a_body_over_the_limit_is_413(client: httpx.Client) -> None:
    big = {"model": GEN_MODEL, "prompt": "x" * 3000}
    response = client.post("/v1/completions", json=big)
    assert response.status_code == 413
    assert response.json()["error"]["param"] == "body"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading
        yield b'{"prompt": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    streamed = client.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413


def test_a_grpc_message_over_the_limit_is_resource_exhausted(channel: grpc.Channel) -> None:
    stub = pb_grpc.InferenceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(pb.GenerateRequest(prompt="x" * 3000), metadata=GRPC_AUTH, timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_prompt_over_the_configured_limit_is_400(client: httpx.Client) -> None:
    response = client.post("/v1/completions", json={"model": GEN_MODEL, "prompt": "To be, or not to be"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "prompt" and "16" in error["message"]


def test_more_samples_than_slots_is_400_naming_n(client: httpx.Client) -> None:
    response = client.post("/v1/completions", json={"model": GEN_MODEL, "prompt": "To be", "n": 2})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "n"


def test_a_full_queue_is_429_with_retry_after_and_resource_exhausted(
    limited: ServerProcess, client: httpx.Client, channel: grpc.Channel
) -> None:
    hog = {"model": RNN_MODEL, "prompt": "To be", "stream": True, **ENDLESS}
    with client.stream("POST", "/v1/completions", json=hog) as holder:
        stream = events(holder)  # kept open: a dropped iterator would close the connection early
        assert next(stream) != "[DONE]"  # the only slot is taken, and the queue holds none
        refused = client.post(
            "/v1/completions", json={"model": RNN_MODEL, "prompt": "To be", "max_tokens": 2}
        )
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "3"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        # The native route is refused the same way, before its body is validated, with its id echoed.
        native = client.post(
            "/v1/generate", json={"model": RNN_MODEL, "prompt": "To be"}, headers={"x-request-id": "full-1"}
        )
        assert native.status_code == 429 and native.headers["retry-after"] == "3"
        assert native.headers["x-request-id"] == "full-1"
        assert native.json()["error"]["type"] == "rate_limit_error"
        stub = pb_grpc.InferenceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Generate(pb.GenerateRequest(model=RNN_MODEL, prompt="To be"), metadata=GRPC_AUTH, timeout=30)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert next(stream) != "[DONE]"  # the holder was streaming all along
    wait_for(client, "seqserve_kv_slots_used", lambda v: v == 0, model=RNN_MODEL)
    after = client.post("/v1/completions", json={"model": RNN_MODEL, "prompt": "To be", "max_tokens": 2})
    assert after.status_code == 200


def test_each_request_logs_one_json_line_with_its_id_timings_and_tokens(
    limited: ServerProcess, client: httpx.Client
) -> None:
    body = {"model": GEN_MODEL, "prompt": "To be", "max_tokens": 3, "temperature": 0, "ignore_eos": True}
    headers = {"x-request-id": "log-check-1"}
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}, headers=headers) as response:
        assert response.status_code == 200
        assert list(events(response))[-1] == "[DONE]"
    lines = [json.loads(line) for line in limited.log().splitlines() if line.startswith("{")]
    assert len(lines) == len(limited.log().splitlines())  # every line is JSON
    (entry,) = [e for e in lines if e.get("request_id") == "log-check-1"]
    assert entry["route"] == "/v1/completions" and entry["model"] == GEN_MODEL and entry["status"] == 200
    assert entry["prompt_tokens"] == 5 and entry["completion_tokens"] == 3
    assert entry["duration_ms"] >= entry["ttft_ms"] > 0
    assert entry["finish"] == "length"
