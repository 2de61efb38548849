"""A client that goes away (SSE or unary), a gRPC cancel, or a passed deadline stops its generation and
frees its slot. The requests would otherwise run for 100k tokens; the slot gauges come from /metrics."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import grpc
import httpx
import pytest

from harness.metrics_reader import sample, wait_for
from harness.server_process import ServerProcess
from service.api.generated.seqserve.v1 import inference_pb2 as pb
from service.api.generated.seqserve.v1 import inference_pb2_grpc as pb_grpc
from tests.api.conftest import ENDLESS, RNN_MODEL
from tests.api.sse import events

ENDLESS_PB = pb.SamplingParams(max_tokens=ENDLESS["max_tokens"], ignore_eos=True, temperature=0.0)


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[pb_grpc.InferenceStub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield pb_grpc.InferenceStub(channel)


def count(http: httpx.Client, route: str, status: str) -> float:
    return sample(http, "seqserve_requests_total", route=route, model=RNN_MODEL, status=status) or 0.0


def slot_taken(http: httpx.Client) -> None:
    wait_for(http, "seqserve_kv_slots_used", lambda v: (v or 0) >= 1, model=RNN_MODEL)


def slots_freed(http: httpx.Client) -> None:
    wait_for(http, "seqserve_kv_slots_used", lambda v: v == 0, model=RNN_MODEL)
    wait_for(http, "seqserve_num_requests_running", lambda v: v == 0, model=RNN_MODEL)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"model": RNN_MODEL, "prompt": "To be", "stream": True, **ENDLESS}),
        ("/v1/generate", {"model": RNN_MODEL, "prompt": "To be", "stream": True, "params": ENDLESS}),
    ],
)
def test_closing_an_event_stream_frees_its_slot(
    server: ServerProcess, http: httpx.Client, path: str, body: dict
) -> None:
    cancelled_before = count(http, path, "499")
    with (
        httpx.Client(base_url=server.url, timeout=30.0) as client,
        client.stream("POST", path, json=body) as response,
    ):
        assert response.status_code == 200
        stream = events(response)  # kept open: a dropped iterator would close the connection early
        assert next(stream) != "[DONE]"  # tokens flow: the request holds a slot
        slot_taken(http)
        assert next(stream) != "[DONE]"  # still streaming while the test looked
    slots_freed(http)
    wait_for(
        http,
        "seqserve_requests_total",
        lambda v: v == cancelled_before + 1,
        route=path,
        model=RNN_MODEL,
        status="499",
    )


def test_a_unary_client_that_disconnects_frees_its_slot(server: ServerProcess, http: httpx.Client) -> None:
    cancelled_before = count(http, "/v1/completions", "499")
    body = json.dumps({"model": RNN_MODEL, "prompt": "To be", **ENDLESS}).encode()
    head = (
        "POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30.0) as sock:
        sock.sendall(head.encode() + body)
        slot_taken(http)
    slots_freed(http)
    wait_for(
        http,
        "seqserve_requests_total",
        lambda v: v == cancelled_before + 1,
        route="/v1/completions",
        model=RNN_MODEL,
        status="499",
    )


def test_a_grpc_cancel_frees_the_slot(stub: pb_grpc.InferenceStub, http: httpx.Client) -> None:
    call = stub.GenerateStream(
        pb.GenerateRequest(model=RNN_MODEL, prompt="To be", params=ENDLESS_PB), timeout=60.0
    )
    first = next(call)
    assert first.token_ids
    slot_taken(http)
    call.cancel()
    slots_freed(http)


def test_a_passed_grpc_deadline_stops_the_generation(stub: pb_grpc.InferenceStub, http: httpx.Client) -> None:
    cancelled_before = count(http, "grpc.Generate", "499")
    request = pb.GenerateRequest(model=RNN_MODEL, prompt="To be", params=ENDLESS_PB)
    future = stub.Generate.future(request, timeout=5.0)
    slot_taken(http)  # the handler runs and generates; only the deadline can end it
    with pytest.raises(grpc.RpcError) as caught:
        future.result(timeout=60.0)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(
        http,
        "seqserve_requests_total",
        lambda v: v == cancelled_before + 1,
        route="grpc.Generate",
        model=RNN_MODEL,
        status="499",
    )
    slots_freed(http)
