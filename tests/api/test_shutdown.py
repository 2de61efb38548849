"""SIGTERM: readiness fails at once, new work is refused, in-flight requests finish (none lost) or are
cancelled at the drain timeout, both servers stop, and the process exits 0."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import grpc
import httpx
import pytest

from harness.metrics_reader import sample
from harness.server_process import ServerProcess
from service.api.generated.seqserve.v1 import inference_pb2 as pb
from service.api.generated.seqserve.v1 import inference_pb2_grpc as pb_grpc
from tests.api.conftest import ENDLESS, RNN_MODEL, copy_model, start_server

DRAINING = "seqserve_server_draining"


def lstm_server(api_models_dir: Path, tmp_path: Path, **env: str | int | float) -> ServerProcess:
    root = tmp_path / "models"
    copy_model(api_models_dir / RNN_MODEL, root / RNN_MODEL, RNN_MODEL)
    return start_server(
        root, tmp_path / "server.log", max_slots=2, max_queue=16, max_new_tokens=ENDLESS["max_tokens"], **env
    )


async def stream_completion(client: httpx.AsyncClient, body: dict, started: asyncio.Event) -> dict:
    """Read one SSE completion to its end: the finish reason, whether [DONE] came, and the usage."""
    outcome: dict = {"finish": None, "done": False, "usage": None}
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
            }
        assert server.wait_exit(60) == 0, server.log()
        assert "drained in" in server.log()
    finally:
        server.stop()


def test_the_drain_timeout_cancels_what_is_left_and_still_exits_zero(
    api_models_dir: Path, tmp_path: Path
) -> None:
    server = lstm_server(api_models_dir, tmp_path, drain_timeout_s=1)
    body = {"model": RNN_MODEL, "prompt": "To be", "stream": True, **ENDLESS}

    async def scenario() -> list[dict]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120.0) as client:
            started = [asyncio.Event() for _ in range(2)]
            tasks = [asyncio.create_task(stream_completion(client, body, s)) for s in started]
            await asyncio.wait_for(asyncio.gather(*(s.wait() for s in started)), 60)
            server.terminate()
            return await asyncio.wait_for(asyncio.gather(*tasks), 120)

    try:
        outcomes = asyncio.run(scenario())
        assert [o["finish"] for o in outcomes] == ["cancelled", "cancelled"]
        assert all(o["done"] for o in outcomes)
        assert server.wait_exit(60) == 0, server.log()
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
