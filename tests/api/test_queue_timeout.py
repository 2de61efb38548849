"""The queue time limit: a request that waits longer than SEQSERVE_MAX_QUEUE_TIME_S, its own `timeout`
or (gRPC) its deadline leaves the queue with 503 + Retry-After or DEADLINE_EXCEEDED, and frees its
place; requests that get a slot in time are served as usual."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from harness.metrics_reader import sample, wait_for
from harness.server_process import ServerProcess
from service.api.generated.seqserve.v1 import inference_pb2 as pb
from service.api.generated.seqserve.v1 import inference_pb2_grpc as pb_grpc
from tests.api.conftest import ENDLESS, RNN_MODEL, copy_model, start_server

QUEUE_LIMIT_S = 4.0
SHORT = {"model": RNN_MODEL, "prompt": "To be", "max_tokens": 2}


@pytest.fixture(scope="module")
def server(api_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("queue-timeout")
    copy_model(api_models_dir / RNN_MODEL, root / "models" / RNN_MODEL, RNN_MODEL)
    proc = start_server(
        root / "models",
        root / "server.log",
        max_slots=1,
        max_queue=8,
        max_queue_time_s=QUEUE_LIMIT_S,
        max_new_tokens=ENDLESS["max_tokens"],
        retry_after_s=2,
    )
    yield proc
    assert proc.stop() == 0, proc.log()


def grpc_generate(target: str, **call: object) -> grpc.StatusCode:
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        try:
            stub.Generate(**call)  # type: ignore[arg-type]
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_queue_timeouts_and_deadlines_end_the_right_requests_and_free_their_places(
    server: ServerProcess,
) -> None:
    hold = {"model": RNN_MODEL, "prompt": "To be", "stream": True, **ENDLESS}
    request = pb.GenerateRequest(model=RNN_MODEL, prompt="To be", params=pb.SamplingParams(max_tokens=2))
    timed = pb.GenerateRequest(
        model=RNN_MODEL, prompt="To be", params=pb.SamplingParams(max_tokens=2), timeout=0.5
    )

    async def openai_stream(client: httpx.AsyncClient) -> list[dict | str]:
        body = {**SHORT, "stream": True, "timeout": 0.5}
        async with client.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200  # the headers went out before it was queued
            lines = [line[6:] async for line in response.aiter_lines() if line.startswith("data: ")]
        return [line if line == "[DONE]" else json.loads(line) for line in lines]

    async def scenario() -> dict:
        async with httpx.AsyncClient(base_url=server.url, timeout=60.0) as client:
            async with client.stream("POST", "/v1/completions", json=hold) as holder:
                assert holder.status_code == 200
                held = holder.aiter_lines()  # kept: a dropped iterator would close the stream
                await anext(held)  # generating: the only slot is taken
                began = time.monotonic()
                calls = {
                    "rest_timeout": client.post("/v1/completions", json={**SHORT, "timeout": 0.5}),
                    "native_timeout": client.post(
                        "/v1/generate", json={"prompt": "To be", "params": {"max_tokens": 2}, "timeout": 0.5}
                    ),
                    "openai_stream": openai_stream(client),
                    "grpc_field": asyncio.to_thread(
                        grpc_generate, server.grpc_target, request=timed, timeout=30
                    ),
                    "grpc_deadline": asyncio.to_thread(
                        grpc_generate, server.grpc_target, request=request, timeout=1.0
                    ),
                    "server_limit": client.post("/v1/completions", json=SHORT),
                }
                tasks = {name: asyncio.ensure_future(call) for name, call in calls.items()}
                outcomes = {name: await task for name, task in tasks.items()}
                outcomes["server_limit_s"] = time.monotonic() - began
                with httpx.Client(base_url=server.url, timeout=10.0) as http:
                    outcomes["waiting"] = sample(http, "seqserve_num_requests_waiting", model=RNN_MODEL)
                # Queued without a timeout of its own: served once the holder leaves, within the limit.
                patient = asyncio.ensure_future(client.post("/v1/completions", json=SHORT))
                with httpx.Client(base_url=server.url, timeout=10.0) as http:
                    await asyncio.to_thread(
                        wait_for, http, "seqserve_num_requests_waiting", lambda v: v == 1, model=RNN_MODEL
                    )
            outcomes["patient"] = await patient  # the holder's stream was closed above
            return outcomes

    out = asyncio.run(scenario())
    for name in ("rest_timeout", "native_timeout", "server_limit"):
        response = out[name]
        assert response.status_code == 503, (name, response.text)
        assert response.headers["retry-after"] == "2"
        assert response.json()["error"]["type"] == "service_unavailable"
        assert "in the queue" in response.json()["error"]["message"]
    assert "waited 4 s in the queue" in out["server_limit"].json()["error"]["message"]
    assert out["server_limit_s"] >= QUEUE_LIMIT_S
    stream = out["openai_stream"]
    assert stream[-2]["error"]["code"] == 503 and stream[-1] == "[DONE]"
    assert out["grpc_field"] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert out["grpc_deadline"] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert out["waiting"] == 0  # every timed-out request left the queue
    assert out["patient"].status_code == 200, out["patient"].text
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        wait_for(http, "seqserve_kv_slots_used", lambda v: v == 0, model=RNN_MODEL)
        assert http.post("/v1/completions", json=SHORT).status_code == 200


def test_a_timeout_must_be_positive(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        response = http.post("/v1/completions", json={**SHORT, "timeout": 0})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "timeout"
