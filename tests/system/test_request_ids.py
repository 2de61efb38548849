"""Found by the gRPC fuzz (R5): a client's request_id is echoed as the `x-request-id` header, so one
that is not a legal header value must be refused as a bad field (400 / INVALID_ARGUMENT) instead of
failing the response with a server error; a legal one is still echoed."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import httpx
import pytest

from harness.server_process import ServerProcess
from service.api.generated.seqserve.v1 import inference_pb2 as pb
from service.api.generated.seqserve.v1 import inference_pb2_grpc as pb_grpc
from tests.system.conftest import Models

ILLEGAL = ["é漢字🙂", "\u202e\ufeff", "a b", "line\nbreak", "x" * 129]


@pytest.fixture
def server(system_models: Models, serve: Callable[..., ServerProcess]) -> ServerProcess:
    return serve(system_models.root, max_new_tokens=32)


def test_request_ids_that_are_not_header_values_are_bad_fields_on_rest_and_grpc(
    server: ServerProcess, system_models: Models
) -> None:
    params = pb.SamplingParams(max_tokens=2)
    with (
        httpx.Client(base_url=server.url, timeout=30.0) as http,
        grpc.insecure_channel(server.grpc_target) as channel,
    ):
        stub = pb_grpc.InferenceStub(channel)
        for rid in ILLEGAL:
            body = {
                "model": system_models.generate,
                "prompt": "To be",
                "request_id": rid,
                "params": {"max_tokens": 2},
            }
            response = http.post("/v1/generate", json=body)
            assert response.status_code == 400 and response.json()["error"]["param"] == "request_id", rid
            request = pb.GenerateRequest(
                model=system_models.generate, prompt="To be", params=params, request_id=rid
            )
            for call in (stub.Generate, lambda r, timeout: list(stub.GenerateStream(r, timeout=timeout))):
                with pytest.raises(grpc.RpcError) as caught:
                    call(request, timeout=30)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (rid, caught.value)
                assert caught.value.details().startswith("request_id:")

        body = {
            "model": system_models.generate,
            "prompt": "To be",
            "request_id": "job-42/a.b",
            "params": {"max_tokens": 2},
        }
        assert http.post("/v1/generate", json=body).headers["x-request-id"] == "job-42/a.b"
        request = pb.GenerateRequest(
            model=system_models.generate, prompt="To be", params=params, request_id="job-42"
        )
        _, call = stub.Generate.with_call(request, timeout=30)
        assert ("x-request-id", "job-42") in call.initial_metadata()
