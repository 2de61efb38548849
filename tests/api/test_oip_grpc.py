"""inference.GRPCInferenceService (the Open Inference Protocol over gRPC) with the generated stubs, the
standard health client and grpcurl over reflection. (tritonclient and kserve: tests/clients.)"""

from __future__ import annotations

import json
import struct
import subprocess
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.server_process import ServerProcess
from service.api.generated.inference import grpc_predict_v2_pb2 as pb
from service.api.generated.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.api.conftest import BROKEN_MODEL, CLF_MODEL, GEN_MODEL
from tests.api.test_grpc import grpcurl

TEXTS = ["a fine film", "dull, slow and far too long", "é漢字🙂"]
TIMEOUT = 30.0
Input = pb.ModelInferRequest.InferInputTensor


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as ch:
        grpc.channel_ready_future(ch).result(timeout=TIMEOUT)
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(channel)


def raw_texts(texts: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code()


def test_server_and_model_health_and_metadata(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=TIMEOUT).live
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=TIMEOUT).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name=CLF_MODEL), timeout=TIMEOUT).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name=BROKEN_MODEL), timeout=TIMEOUT).ready
    meta = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=TIMEOUT)
    assert meta.name == "seqserve" and "binary_tensor_data" in meta.extensions
    model = stub.ModelMetadata(pb.ModelMetadataRequest(name=CLF_MODEL, version="1"), timeout=TIMEOUT)
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [
        ("label", "BYTES", [-1]),
        ("probabilities", "FP32", [-1, 2]),
    ]
    missing = pb.ModelReadyRequest(name="no-such-model")
    assert code_of(lambda: stub.ModelReady(missing, timeout=TIMEOUT)) == grpc.StatusCode.NOT_FOUND


def test_model_infer_matches_the_rest_sentiment_route(
    stub: pb_grpc.GRPCInferenceServiceStub, http: httpx.Client
) -> None:
    v1 = http.post("/v1/sentiment", json={"model": CLF_MODEL, "texts": TEXTS}).json()["results"]
    expected = np.array([list(r["probabilities"].values()) for r in v1], dtype=np.float32)
    raw = pb.ModelInferRequest(
        model_name=CLF_MODEL,
        id="grpc-1",
        inputs=[Input(name="text", datatype="BYTES", shape=[3])],
        raw_input_contents=[raw_texts(TEXTS)],
    )
    typed = pb.ModelInferRequest(
        model_name=CLF_MODEL,
        inputs=[
            Input(
                name="text",
                datatype="BYTES",
                shape=[3],
                contents={"bytes_contents": [t.encode() for t in TEXTS]},
            )
        ],
    )
    for request in (raw, typed):
        reply = stub.ModelInfer(request, timeout=TIMEOUT)
        assert reply.model_name == CLF_MODEL and reply.id == request.id
        label, probs = reply.outputs
        assert (label.name, list(label.shape), probs.name, list(probs.shape)) == (
            "label",
            [3],
            "probabilities",
            [3, 2],
        )
        assert reply.raw_output_contents[0] == raw_texts([r["label"] for r in v1])
        got = np.frombuffer(reply.raw_output_contents[1], dtype="<f4").reshape(3, 2)
        assert np.array_equal(got, expected)


@pytest.mark.parametrize(
    ("request_fields", "code"),
    [
        ({"model_name": "no-such-model"}, grpc.StatusCode.NOT_FOUND),
        ({"model_name": ""}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"model_version": "9"}, grpc.StatusCode.NOT_FOUND),
        ({"model_name": GEN_MODEL}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"raw_input_contents": [b"\x05\x00\x00\x00ab"]}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"raw_input_contents": [b"", b""]}, grpc.StatusCode.INVALID_ARGUMENT),
        (
            {"outputs": [pb.ModelInferRequest.InferRequestedOutputTensor(name="nope")]},
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        ({"inputs": [Input(name="text", datatype="BYTES", shape=[-1])]}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"inputs": [Input(name="text", datatype="FP32", shape=[1])]}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"raw_input_contents": [b"\x02\x00\x00\x00\xff\xfe"]}, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_bad_infer_requests_get_client_error_codes(
    stub: pb_grpc.GRPCInferenceServiceStub, request_fields: dict, code: grpc.StatusCode
) -> None:
    fields: dict = {
        "model_name": CLF_MODEL,
        "inputs": [Input(name="text", datatype="BYTES", shape=[1])],
        "raw_input_contents": [raw_texts(["fine"])],
        **request_fields,
    }
    request = pb.ModelInferRequest(**fields)
    assert code_of(lambda: stub.ModelInfer(request, timeout=TIMEOUT)) == code


def test_health_covers_the_service(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(
        health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"), timeout=TIMEOUT
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_grpcurl_finds_and_calls_the_service_through_reflection(server: ServerProcess) -> None:
    def run(*args: str) -> str:
        done = subprocess.run(
            [grpcurl(), "-plaintext", *args], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "inference.GRPCInferenceService" in run(server.grpc_target, "list").split()
    described = run(server.grpc_target, "describe", "inference.GRPCInferenceService")
    assert (
        "rpc ModelInfer ( .inference.ModelInferRequest ) returns ( .inference.ModelInferResponse )"
        in described
    )
    body = json.dumps(
        {
            "model_name": CLF_MODEL,
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [1],
                    "contents": {"bytes_contents": ["ZmluZQ=="]},
                }
            ],
        }
    )  # base64 of "fine"
    reply = json.loads(run("-d", body, server.grpc_target, "inference.GRPCInferenceService/ModelInfer"))
    assert reply["model_name"] == CLF_MODEL and [o["name"] for o in reply["outputs"]] == [
        "label",
        "probabilities",
    ]
