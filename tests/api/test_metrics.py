"""GET /metrics: vLLM-style `seqserve_` families that move with traffic and pass `promtool check metrics`,
and the values operators act on: queue time, TTFT against end to end, inter-token counts, and gauges
that come back to 0 after cancellations (a server of its own, with one slot, so requests queue)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from harness.metrics_reader import histograms, sample, samples, wait_for
from harness.server_process import ServerProcess
from harness.tiny_models import tiny_prompt
from service.api.generated.seqserve.v1 import inference_pb2 as pb
from service.api.generated.seqserve.v1 import inference_pb2_grpc as pb_grpc
from tests.api.conftest import CLF_MODEL, ENDLESS, GEN_MODEL, RNN_MODEL, copy_model, start_server
from tests.api.sse import events

FAMILIES = [
    "seqserve_requests_total",
    "seqserve_e2e_request_latency_seconds_bucket",
    "seqserve_time_to_first_token_seconds_bucket",
    "seqserve_inter_token_latency_seconds_bucket",
    "seqserve_request_queue_time_seconds_bucket",
    "seqserve_prompt_tokens_total",
    "seqserve_generation_tokens_total",
    "seqserve_batch_size_bucket",
    "seqserve_num_requests_running",
    "seqserve_num_requests_waiting",
    "seqserve_kv_slots_used",
    "seqserve_kv_slots_capacity",
    "seqserve_kv_slots_usage_ratio",
    "seqserve_classifier_batch_size_bucket",
    "seqserve_classifier_latency_seconds_bucket",
    "seqserve_model_ready",
    "seqserve_api_requests_in_flight",
    "seqserve_api_request_duration_seconds_bucket",
    "seqserve_server_draining",
]


def test_metrics_pass_promtool_check(http: httpx.Client) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    http.post("/v1/completions", json={"model": GEN_MODEL, "prompt": "To be", "max_tokens": 4})
    http.post("/v1/sentiment", json={"texts": ["fine"]})
    text = http.get("/metrics").text
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_documented_family_is_exposed(http: httpx.Client) -> None:
    http.post("/v1/completions", json={"model": GEN_MODEL, "prompt": "To be", "max_tokens": 4})
    http.post("/v1/sentiment", json={"texts": ["fine"]})
    text = http.get("/metrics").text
    missing = [name for name in FAMILIES if f"\n{name}" not in text]
    assert not missing


def test_a_completion_moves_the_request_and_token_counters(http: httpx.Client) -> None:
    labels = {"route": "/v1/completions", "model": GEN_MODEL, "status": "200"}
    before = {
        "requests": sample(http, "seqserve_requests_total", **labels) or 0,
        "prompt": sample(http, "seqserve_prompt_tokens_total", model=GEN_MODEL) or 0,
        "generated": sample(http, "seqserve_generation_tokens_total", model=GEN_MODEL) or 0,
        "ttft": sample(http, "seqserve_time_to_first_token_seconds_count", model=GEN_MODEL) or 0,
    }
    body = {"model": GEN_MODEL, "prompt": "To be", "max_tokens": 5, "temperature": 0, "ignore_eos": True}
    assert http.post("/v1/completions", json=body).status_code == 200
    assert sample(http, "seqserve_requests_total", **labels) == before["requests"] + 1
    assert sample(http, "seqserve_prompt_tokens_total", model=GEN_MODEL) == before["prompt"] + len(
        tiny_prompt("To be")
    )
    assert sample(http, "seqserve_generation_tokens_total", model=GEN_MODEL) == before["generated"] + 5
    assert sample(http, "seqserve_time_to_first_token_seconds_count", model=GEN_MODEL) == before["ttft"] + 1
    assert sample(http, "seqserve_model_ready", model=GEN_MODEL) == 1


def test_classification_moves_the_classifier_histograms(http: httpx.Client) -> None:
    before = sample(http, "seqserve_classifier_latency_seconds_count", model=CLF_MODEL) or 0
    http.post("/v1/sentiment", json={"texts": ["one", "two", "three"]})
    assert sample(http, "seqserve_classifier_latency_seconds_count", model=CLF_MODEL) == before + 3
    assert (sample(http, "seqserve_classifier_batch_size_count", model=CLF_MODEL) or 0) >= 1


QUEUE = "seqserve_request_queue_time_seconds"
TTFT = "seqserve_time_to_first_token_seconds"
ITL = "seqserve_inter_token_latency_seconds"
E2E = "seqserve_e2e_request_latency_seconds"
LATENCIES = [QUEUE, TTFT, ITL, E2E]
ENDLESS_PB = pb.SamplingParams(max_tokens=ENDLESS["max_tokens"], ignore_eos=True, temperature=0.0)


@pytest.fixture(scope="module")
def one_slot(api_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Defaults but one slot (so a second request queues) and no cap on max_tokens (so only a cancel
    ends a request); one model, so no other test's traffic moves its metrics."""
    root = tmp_path_factory.mktemp("one-slot-models")
    copy_model(api_models_dir / RNN_MODEL, root / RNN_MODEL, RNN_MODEL)
    proc = start_server(root, root.parent / "one-slot.log", max_slots=1, max_new_tokens=ENDLESS["max_tokens"])
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def one_slot_http(one_slot: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=one_slot.url, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="module")
def one_slot_stub(one_slot: ServerProcess) -> Iterator[pb_grpc.InferenceStub]:
    with grpc.insecure_channel(one_slot.grpc_target) as channel:
        yield pb_grpc.InferenceStub(channel)


def idle(http: httpx.Client) -> None:
    """Nothing running or waiting: earlier tests' cancellations have been processed."""
    for gauge in ("seqserve_num_requests_running", "seqserve_num_requests_waiting", "seqserve_kv_slots_used"):
        wait_for(http, gauge, lambda v: v == 0, model=RNN_MODEL)


def test_a_queued_request_reports_the_time_it_waited(
    one_slot: ServerProcess, one_slot_http: httpx.Client, one_slot_stub: pb_grpc.InferenceStub
) -> None:
    http = one_slot_http
    idle(http)
    body = {"model": RNN_MODEL, "prompt": "To be", "stream": True, **ENDLESS}
    with (
        httpx.Client(base_url=one_slot.url, timeout=30.0) as client,
        client.stream("POST", "/v1/completions", json=body) as holder,
    ):
        held = events(holder)  # kept: a dropped iterator would close the connection early
        assert next(held) != "[DONE]"  # the holder has the only slot
        before = histograms(http, LATENCIES, model=RNN_MODEL)
        params = pb.SamplingParams(max_tokens=3, ignore_eos=True, temperature=0.0)
        queued = one_slot_stub.Generate.future(
            pb.GenerateRequest(model=RNN_MODEL, prompt="To be", params=params), timeout=60.0
        )
        wait_for(http, "seqserve_num_requests_waiting", lambda v: v == 1, model=RNN_MODEL)
        seen_waiting = time.perf_counter()
        assert histograms(http, [TTFT], model=RNN_MODEL)[TTFT] == before[TTFT]  # not started yet
        released = time.perf_counter()  # the holder's slot is freed only after this
    assert len(queued.result(timeout=60.0).completions[0].token_ids) == 3
    wait_for(http, f"{QUEUE}_count", lambda v: v == before[QUEUE].count + 1, model=RNN_MODEL)
    waited = histograms(http, [QUEUE], model=RNN_MODEL)[QUEUE] - before[QUEUE]
    assert waited.count == 1
    assert waited.sum >= released - seen_waiting > 0, waited


def test_ttft_comes_before_the_end_and_every_later_token_has_one_gap(
    one_slot: ServerProcess, one_slot_http: httpx.Client
) -> None:
    http = one_slot_http
    idle(http)
    tokens = 12
    before = histograms(http, LATENCIES, model=RNN_MODEL)
    tokens_before = sample(http, "seqserve_generation_tokens_total", model=RNN_MODEL) or 0
    body = {"model": RNN_MODEL, "prompt": "To be", "max_tokens": tokens, "ignore_eos": True, "stream": True}
    start = time.perf_counter()
    with (
        httpx.Client(base_url=one_slot.url, timeout=30.0) as client,
        client.stream("POST", "/v1/completions", json=body) as response,
    ):
        assert list(events(response))[-1] == "[DONE]"
    client_e2e = time.perf_counter() - start
    wait_for(http, f"{E2E}_count", lambda v: v == before[E2E].count + 1, model=RNN_MODEL)
    after = histograms(http, LATENCIES, model=RNN_MODEL)
    queue, ttft, itl, e2e = (after[name] - before[name] for name in LATENCIES)
    assert (queue.count, ttft.count, e2e.count) == (1, 1, 1)
    assert 0 < queue.sum <= ttft.sum <= e2e.sum <= client_e2e
    assert itl.count == tokens - 1  # one gap between each two consecutive tokens
    assert 0 < itl.sum <= e2e.sum - ttft.sum
    assert sample(http, "seqserve_generation_tokens_total", model=RNN_MODEL) == tokens_before + tokens


def test_in_flight_and_slot_gauges_return_to_zero_after_cancellations(
    one_slot: ServerProcess, one_slot_http: httpx.Client, one_slot_stub: pb_grpc.InferenceStub
) -> None:
    """One running SSE stream and three queued requests (unary REST, gRPC unary and stream), all
    abandoned by their clients: each is counted as a 499 and nothing stays in flight."""
    http = one_slot_http
    idle(http)
    routes = ["/v1/completions", "grpc.Generate", "grpc.GenerateStream"]
    cancelled = {
        r: sample(http, "seqserve_requests_total", route=r, model=RNN_MODEL, status="499") or 0
        for r in routes
    }
    body = {"model": RNN_MODEL, "prompt": "To be", "stream": True, **ENDLESS}
    request = pb.GenerateRequest(model=RNN_MODEL, prompt="To be", params=ENDLESS_PB)
    unary = b'{"model": "%s", "prompt": "To be", "max_tokens": 5, "ignore_eos": true}' % RNN_MODEL.encode()
    head = (
        "POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(unary)}\r\n\r\n"
    ).encode()
    with (
        httpx.Client(base_url=one_slot.url, timeout=30.0) as client,
        client.stream("POST", "/v1/completions", json=body) as running,
    ):
        stream = events(running)  # kept: a dropped iterator would close the connection early
        assert next(stream) != "[DONE]"
        calls = [
            one_slot_stub.Generate.future(request, timeout=60.0),
            one_slot_stub.GenerateStream(request, timeout=60.0),
        ]
        with socket.create_connection(("127.0.0.1", one_slot.http_port), timeout=30.0) as raw:
            raw.sendall(head + unary)
            wait_for(http, "seqserve_num_requests_waiting", lambda v: v == 3, model=RNN_MODEL)
            in_flight = samples(http, ["seqserve_api_requests_in_flight"], route="/v1/completions")
            assert in_flight["seqserve_api_requests_in_flight"] == 2
        for call in calls:
            call.cancel()
    wait_for(
        http,
        "seqserve_requests_total",
        lambda v: v == cancelled["/v1/completions"] + 2,
        route="/v1/completions",
        model=RNN_MODEL,
        status="499",
    )
    for route in routes[1:]:
        wait_for(
            http,
            "seqserve_requests_total",
            lambda v, r=route: v == cancelled[r] + 1,
            route=route,
            model=RNN_MODEL,
            status="499",
        )
    for route in routes:
        assert sample(http, "seqserve_api_requests_in_flight", route=route) == 0, route
    for gauge in ("seqserve_num_requests_running", "seqserve_num_requests_waiting", "seqserve_kv_slots_used"):
        assert sample(http, gauge, model=RNN_MODEL) == 0, gauge
    assert sample(http, "seqserve_kv_slots_capacity", model=RNN_MODEL) == 1
