"""SIGTERM: readiness fails at once, new work is refused, in-flight requests finish (none lost) or are
cancelled at the drain timeout, both servers stop, and the process exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import grpc
import httpx
import pytest

from harness.metrics_reader import sample, wait_for
from harness.server_process import ServerProcess
from service.api.generated.seqserve.v1 import inference_pb2 as pb
from service.api.generated.seqserve.v1 import inference_pb2_grpc as pb_grpc
from tests.api.conftest import ENDLESS, RNN_MODEL, copy_model, start_server

DRAINING = "seqserve_server_draining"


def lstm_server(api_models_dir: Path, tmp_path: Path, **env: str | int | float) -> ServerProcess:
    root = tmp_path / "models"
    copy_model(api_models_dir / RNN_MODEL, root / RNN_MODEL, RNN_MODEL)
    settings = {"max_slots": 2, "max_queue": 16, "max_new_tokens": ENDLESS["max_tokens"], **env}
    return start_server(root, tmp_path / "server.log", **settings)


async def stream_completion(client: httpx.AsyncClient, body: dict, started: asyncio.Event) -> dict:
    """Read one SSE completion to its end: the finish reason, whether [DONE] came, the usage, and the
    error event if the server stopped it."""
    outcome: dict = {"finish": None, "done": False, "usage": None, "error": None}
    async with client.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        started.set()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                outcome["done"] = True
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                outcome["error"] = chunk["error"]
                continue
            if chunk.get("usage"):
                outcome["usage"] = chunk["usage"]
            for choice in chunk["choices"]:
                outcome["finish"] = choice["finish_reason"] or outcome["finish"]
    return outcome


async def wait_not_ready(client: httpx.AsyncClient, timeout: float = 10.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get("/readyz")
        if response.status_code == 503 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.02)


def test_sigterm_lets_in_flight_requests_finish_and_exits_zero(api_models_dir: Path, tmp_path: Path) -> None:
    server = lstm_server(api_models_dir, tmp_path, drain_timeout_s=120)
    tokens, count = 1000, 6  # two slots: four of the six wait in the queue when SIGTERM arrives
    body = {"model": RNN_MODEL, "prompt": "To be", "max_tokens": tokens, "ignore_eos": True, "temperature": 0}
    body |= {"stream": True, "stream_options": {"include_usage": True}}

    async def scenario() -> tuple[list[dict], httpx.Response, httpx.Response, bool, list[float | None]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120.0) as client:
            started = [asyncio.Event() for _ in range(count)]
            tasks = [asyncio.create_task(stream_completion(client, body, s)) for s in started]
            await asyncio.wait_for(asyncio.gather(*(s.wait() for s in started)), 60)
            draining = [await asyncio.to_thread(sample, metrics, DRAINING)]
            server.terminate()
            not_ready = await wait_not_ready(client)
            draining.append(await asyncio.to_thread(sample, metrics, DRAINING))
            still_running = not all(t.done() for t in tasks)
            refused = await client.post("/v1/completions", json={"model": RNN_MODEL, "prompt": "To be"})
            outcomes = await asyncio.wait_for(asyncio.gather(*tasks), 300)
            return outcomes, not_ready, refused, still_running, draining

    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as metrics:
            outcomes, not_ready, refused, still_running, draining = asyncio.run(scenario())
        assert not_ready.status_code == 503 and not_ready.json()["reason"] == "draining"
        assert still_running, "the requests finished before the drain could be observed"
        assert draining == [0, 1], "seqserve_server_draining before SIGTERM, then during the drain"
        assert refused.status_code == 503
        for outcome in outcomes:
            assert outcome == {
                "finish": "length",
                "done": True,
                "usage": {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": tokens + 5},
                "error": None,
            }
        assert server.wait_exit(60) == 0, server.log()
        assert "drained in" in server.log()
    finally:
        server.stop()


def test_the_drain_timeout_cancels_what_is_left_with_a_retryable_error_and_still_exits_zero(
    api_models_dir: Path, tmp_path: Path
) -> None:
    server = lstm_server(api_models_dir, tmp_path, drain_timeout_s=1, max_slots=5)
    endless = {"model": RNN_MODEL, "prompt": "To be", **ENDLESS}
    grpc_params = pb.SamplingParams(max_tokens=ENDLESS["max_tokens"], ignore_eos=True, temperature=0.0)

    def grpc_call(stream: bool) -> grpc.StatusCode:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = pb_grpc.InferenceStub(channel)
            request = pb.GenerateRequest(model=RNN_MODEL, prompt="To be", params=grpc_params)
            try:
                if stream:
                    for _ in stub.GenerateStream(request, timeout=120):
                        pass
                else:
                    stub.Generate(request, timeout=120)
            except grpc.RpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    async def native_stream(client: httpx.AsyncClient, started: asyncio.Event) -> list[dict]:
        body = {"model": RNN_MODEL, "prompt": "To be", "stream": True, "params": ENDLESS}
        async with client.stream("POST", "/v1/generate", json=body) as response:
            started.set()
            lines = [line[6:] async for line in response.aiter_lines() if line.startswith("data: ")]
        return [json.loads(line) for line in lines[:-1]] + [lines[-1]]

    async def scenario() -> tuple:
        async with httpx.AsyncClient(base_url=server.url, timeout=120.0) as client:
            started = [asyncio.Event() for _ in range(2)]
            openai_stream = asyncio.create_task(
                stream_completion(client, {**endless, "stream": True}, started[0])
            )
            native = asyncio.create_task(native_stream(client, started[1]))
            unary = asyncio.create_task(client.post("/v1/completions", json=endless))
            grpc_unary = asyncio.create_task(asyncio.to_thread(grpc_call, False))
            grpc_stream = asyncio.create_task(asyncio.to_thread(grpc_call, True))
            await asyncio.wait_for(asyncio.gather(*(s.wait() for s in started)), 60)
            with httpx.Client(base_url=server.url, timeout=10.0) as http:  # all four are generating
                await asyncio.to_thread(wait_for, http, "seqserve_num_requests_running", lambda v: v == 5)
            server.terminate()
            calls = (openai_stream, native, unary, grpc_unary, grpc_stream)
            return await asyncio.wait_for(asyncio.gather(*calls), 120)

    try:
        openai_outcome, native_messages, unary, grpc_code, grpc_stream_code = asyncio.run(scenario())
        # Unary: a retryable 503 (and UNAVAILABLE), not a 200 with empty text; a gRPC stream's status too.
        assert unary.status_code == 503, unary.text
        assert unary.headers["retry-after"] == "1"
        assert unary.json()["error"]["type"] == "service_unavailable"
        assert grpc_code == grpc_stream_code == grpc.StatusCode.UNAVAILABLE
        # Streams already under way end with an error event, then [DONE].
        assert openai_outcome["error"]["code"] == 503 and openai_outcome["done"]
        assert native_messages[-3]["finish_reason"] == "cancelled"
        assert native_messages[-2]["error"]["code"] == 503 and native_messages[-1] == "[DONE]"
        assert server.wait_exit(60) == 0, server.log()
        statuses = [line for line in server.log().splitlines() if "route=" in line]
        assert len(statuses) == 5 and all("status=503" in line for line in statuses), statuses
    finally:
        server.stop()


def test_a_second_signal_ends_the_drain_at_once(api_models_dir: Path, tmp_path: Path) -> None:
    server = lstm_server(api_models_dir, tmp_path, drain_timeout_s=300)
    body = {"model": RNN_MODEL, "prompt": "To be", "stream": True, **ENDLESS}

    async def scenario() -> dict:
        async with httpx.AsyncClient(base_url=server.url, timeout=120.0) as client:
            started = asyncio.Event()
            holder = asyncio.create_task(stream_completion(client, body, started))
            await asyncio.wait_for(started.wait(), 60)
            server.terminate()
            await wait_not_ready(client)
            assert not holder.done(), "the drain waits for the stream"
            assert server.proc is not None
            server.proc.send_signal(signal.SIGINT)
            return await asyncio.wait_for(holder, 60)

    try:
        begun = time.monotonic()
        outcome = asyncio.run(scenario())
        assert server.wait_exit(60) == 0, server.log()
        assert time.monotonic() - begun < 60, "the second signal did not cut the 300 s drain short"
        assert outcome["error"]["code"] == 503 and outcome["done"]
        assert "SIGINT again: ending the drain now" in server.log()
    finally:
        server.stop()


def test_grpc_is_refused_and_health_not_serving_while_draining(api_models_dir: Path, tmp_path: Path) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = lstm_server(api_models_dir, tmp_path, drain_timeout_s=30)
    try:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = pb_grpc.InferenceStub(channel)
            params = pb.SamplingParams(max_tokens=ENDLESS["max_tokens"], ignore_eos=True, temperature=0.0)
            holder = stub.GenerateStream(
                pb.GenerateRequest(model=RNN_MODEL, prompt="To be", params=params), timeout=60
            )
            assert next(holder).token_ids  # in flight: the drain waits for it
            server.terminate()
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 10
            while (
                health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
                == health_pb2.HealthCheckResponse.SERVING
            ):
                assert time.monotonic() < deadline, "health did not turn NOT_SERVING"
                time.sleep(0.02)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Generate(pb.GenerateRequest(model=RNN_MODEL, prompt="To be"), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            holder.cancel()  # the client leaves; the drain then has nothing left to wait for
        assert server.wait_exit(60) == 0, server.log()
    finally:
        server.stop()
