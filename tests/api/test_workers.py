"""SEQSERVE_WORKERS=2: both workers serve on the shared ports, /metrics in either adds up both, SIGTERM
drains every worker, and a worker that dies stops the others with a non-zero exit.

The kernel spreads new connections over the workers (SO_REUSEPORT), so each call here uses a new
connection and loops, within a bound, until every worker has answered (`x-seqserve-worker`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.server_process import ServerProcess
from service.api.generated.seqserve.v1 import inference_pb2 as pb
from service.api.generated.seqserve.v1 import inference_pb2_grpc as pb_grpc
from tests.api.conftest import RNN_MODEL, copy_model

WORKERS = 2
SLOTS = 2
WORKER_HEADER = "x-seqserve-worker"
ALL_WORKERS = {str(i) for i in range(WORKERS)}
# New connections until every worker has answered: the chance that 64 all land on one is 2^-63.
MAX_ATTEMPTS = 64
STARTED = re.compile(r"worker (\d+) \(pid (\d+)\) started")


def new_connections() -> httpx.Client:
    """A client that opens a new connection for every request (none is kept alive)."""
    return httpx.Client(timeout=30.0, limits=httpx.Limits(max_keepalive_connections=0))


def until_every_worker(call: Callable[[], httpx.Response]) -> list[httpx.Response]:
    """Repeat `call` until each worker has answered at least once; returns every response."""
    responses: list[httpx.Response] = []
    while {r.headers[WORKER_HEADER] for r in responses} != ALL_WORKERS:
        assert len(responses) < MAX_ATTEMPTS, f"only workers {[r.headers[WORKER_HEADER] for r in responses]}"
        responses.append(call())
    return responses


def start_workers(models_dir: Path, tmp_path: Path, **env: str | int | float) -> ServerProcess:
    """A supervisor with WORKERS workers, all ready; its temp files go to tmp_path/tmp."""
    settings = {"workers": WORKERS, "max_slots": SLOTS, **env}
    server = ServerProcess(models_dir, tmp_path / "server.log", **settings)
    (tmp_path / "tmp").mkdir()
    server.env["TMPDIR"] = str(tmp_path / "tmp")
    server.start()
    try:
        server.wait_ready()  # every worker answered /readyz with 200
        assert len(list((tmp_path / "tmp").glob("seqserve-metrics-*"))) == 1, "where the workers' metrics go"
    except BaseException:
        server.stop()
        raise
    return server


def worker_pids(server: ServerProcess) -> dict[int, int]:
    """index -> pid, from the supervisor's log."""
    return {int(index): int(pid) for index, pid in STARTED.findall(server.log())}


def assert_all_gone(server: ServerProcess, pids: dict[int, int], tmp_path: Path) -> None:
    """No worker outlived the supervisor, and the metrics folder went with it."""
    for index, pid in pids.items():
        assert not Path(f"/proc/{pid}").exists(), f"worker {index} (pid {pid}) outlived the supervisor"
    assert not list((tmp_path / "tmp").glob("seqserve-metrics-*")), "the metrics folder was left behind"


@pytest.fixture(scope="module")
def lstm_models(api_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("workers-models")
    copy_model(api_models_dir / RNN_MODEL, root / RNN_MODEL, RNN_MODEL)
    return root


@pytest.fixture(scope="module")
def two_workers(lstm_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp_path = tmp_path_factory.mktemp("workers")
    server = start_workers(lstm_models, tmp_path)
    yield server
    pids = worker_pids(server)
    assert server.stop() == 0, server.log()
    assert_all_gone(server, pids, tmp_path)


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of one /metrics text."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_a_single_process_names_no_worker(http: httpx.Client) -> None:
    assert WORKER_HEADER not in http.get("/healthz").headers


def test_every_worker_serves_completions_over_new_connections(two_workers: ServerProcess) -> None:
    body = {"model": RNN_MODEL, "prompt": "To be", "max_tokens": 3, "temperature": 0}
    with new_connections() as client:
        responses = until_every_worker(lambda: client.post(f"{two_workers.url}/v1/completions", json=body))
    assert all(r.status_code == 200 for r in responses)
    assert len({r.json()["choices"][0]["text"] for r in responses}) == 1, "greedy: the same text everywhere"


def test_metrics_add_up_across_workers(two_workers: ServerProcess) -> None:
    completion = {"route": "/v1/completions", "model": RNN_MODEL, "status": "200"}
    grpc_generate = {"route": "grpc.Generate", "model": RNN_MODEL, "status": "200"}
    tokens = 4
    body = {"model": RNN_MODEL, "prompt": "To be", "max_tokens": tokens, "ignore_eos": True}
    with new_connections() as client:
        before = parse_metrics(client.get(f"{two_workers.url}/metrics").text)
        served = until_every_worker(lambda: client.post(f"{two_workers.url}/v1/completions", json=body))
        assert all(r.status_code == 200 for r in served)
        calls = 24  # each over a new channel (a new connection): both workers answer some
        for _ in range(calls):
            with grpc.insecure_channel(two_workers.grpc_target) as channel:
                params = pb.SamplingParams(max_tokens=tokens, ignore_eos=True)
                reply = pb_grpc.InferenceStub(channel).Generate(
                    pb.GenerateRequest(model=RNN_MODEL, prompt="To be", params=params), timeout=30
                )
                assert reply.usage.completion_tokens == tokens
        scrapes = until_every_worker(lambda: client.get(f"{two_workers.url}/metrics"))

    generated = (len(served) + calls) * tokens
    for response in scrapes:
        after = parse_metrics(response.text)
        assert value(after, "seqserve_requests_total", **completion) == value(
            before, "seqserve_requests_total", **completion
        ) + len(served)
        assert (
            value(after, "seqserve_requests_total", **grpc_generate)
            == value(before, "seqserve_requests_total", **grpc_generate) + calls
        )
        assert (
            value(after, "seqserve_generation_tokens_total", model=RNN_MODEL)
            == value(before, "seqserve_generation_tokens_total", model=RNN_MODEL) + generated
        )
        # Gauges: capacities add up, readiness holds for every worker, no per-process series.
        assert value(after, "seqserve_kv_slots_capacity", model=RNN_MODEL) == WORKERS * SLOTS
        assert value(after, "seqserve_model_ready", model=RNN_MODEL) == 1
        assert value(after, "seqserve_server_draining") == 0
        assert not [key for key in after if "pid" in dict(key[1])]
    served_grpc = set(re.findall(r"route=grpc\.Generate .* worker=(\d+)", two_workers.log()))
    assert served_grpc == ALL_WORKERS, "gRPC calls over new connections reach every worker"


def test_the_aggregate_passes_promtool_check(two_workers: ServerProcess) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    with new_connections() as client:
        text = client.get(f"{two_workers.url}/metrics").text
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_sigterm_drains_every_worker_and_exits_zero(lstm_models: Path, tmp_path: Path) -> None:
    server = start_workers(lstm_models, tmp_path, max_slots=1, drain_timeout_s=120, max_new_tokens=100_000)
    pids = worker_pids(server)
    tokens = 2500  # one slot per worker: its streams take at least 2 x 2500 tokens, one after the other
    body = {"model": RNN_MODEL, "prompt": "To be", "max_tokens": tokens, "ignore_eos": True, "temperature": 0}
    body |= {"stream": True, "stream_options": {"include_usage": True}}

    async def scenario() -> tuple[list[dict], set[str], bool]:
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, timeout=120.0, limits=limits) as client:
            streams: dict[str, list[asyncio.Task[dict]]] = {w: [] for w in ALL_WORKERS}
            for _ in range(MAX_ATTEMPTS):
                if all(len(tasks) >= 2 for tasks in streams.values()):
                    break
                worker, task = await open_stream_on_worker(client, body)
                streams[worker].append(task)
            assert all(len(tasks) >= 2 for tasks in streams.values()), {w: len(t) for w, t in streams.items()}
            server.terminate()
            draining: set[str] = set()
            deadline = time.monotonic() + 30
            while draining != ALL_WORKERS and time.monotonic() < deadline:
                response = await client.get("/readyz")
                if response.status_code == 503 and response.json()["reason"] == "draining":
                    draining.add(response.headers[WORKER_HEADER])
                await asyncio.sleep(0.01)
            tasks = [task for worker_tasks in streams.values() for task in worker_tasks]
            still_running = not all(task.done() for task in tasks)
            return await asyncio.wait_for(asyncio.gather(*tasks), 300), draining, still_running

    try:
        outcomes, draining, still_running = asyncio.run(scenario())
        assert draining == ALL_WORKERS, "every worker answers /readyz 503 while it drains"
        assert still_running, "the streams finished before the drain could be observed"
        for outcome in outcomes:
            assert outcome == {
                "finish": "length",
                "done": True,
                "usage": {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": tokens + 5},
            }
        assert server.wait_exit(60) == 0, server.log()
        log = server.log()
        for index in range(WORKERS):
            assert re.search(rf"draining: [1-9]\d* requests in flight.* worker={index}\n", log), log
            assert re.search(rf"drained in .* worker={index}\n", log), log
            assert f"worker {index} (pid {pids[index]}) exited cleanly" in log
        assert_all_gone(server, pids, tmp_path)
    finally:
        server.stop()


async def open_stream_on_worker(client: httpx.AsyncClient, body: dict) -> tuple[str, asyncio.Task[dict]]:
    """Start one SSE completion on a new connection; returns the worker serving it and its task."""
    worker: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def read() -> dict:
        outcome: dict = {"finish": None, "done": False, "usage": None}
        async with client.stream("POST", "/v1/completions", json=body) as response:
            worker.set_result(response.headers[WORKER_HEADER])
            assert response.status_code == 200
            outcome = await read_sse(response, outcome)
        return outcome

    task = asyncio.create_task(read())
    await asyncio.wait_for(asyncio.shield(worker), 60)
    return worker.result(), task


async def read_sse(response: httpx.Response, outcome: dict) -> dict:
    """The finish reason, whether [DONE] came, and the usage of one OpenAI SSE stream."""
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


def test_a_worker_that_dies_stops_the_others_and_the_supervisor_fails(
    lstm_models: Path, tmp_path: Path
) -> None:
    server = start_workers(lstm_models, tmp_path)
    pids = worker_pids(server)
    try:
        os.kill(pids[1], signal.SIGKILL)
        assert server.wait_exit(60) == 1, server.log()
        log = server.log()
        assert f"worker 1 (pid {pids[1]}) was killed by SIGKILL unexpectedly" in log
        assert f"worker 0 (pid {pids[0]}) exited cleanly" in log
        assert re.search(r"drained in .* worker=0\n", log), log
        assert_all_gone(server, pids, tmp_path)
    finally:
        server.stop()


def test_ports_in_use_are_refused_before_any_worker_starts(lstm_models: Path, tmp_path: Path) -> None:
    server = ServerProcess(lstm_models, tmp_path / "server.log", workers=WORKERS)
    # Another process sharing the port (SO_REUSEPORT) must not be joined silently.
    with socket.create_server(("127.0.0.1", server.http_port), reuse_port=True):
        server.start()
        try:
            assert server.wait_exit(60) == 1
        finally:
            server.stop()
    assert f"cannot serve on 127.0.0.1:{server.http_port}" in server.log()
    assert "started" not in server.log()


def has_exited(pid: int) -> bool:
    """Gone, or a zombie waiting for whoever adopted it (not every container's init reaps)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_workers_drain_and_exit_when_the_supervisor_is_killed(lstm_models: Path, tmp_path: Path) -> None:
    server = start_workers(lstm_models, tmp_path)
    pids = worker_pids(server)
    try:
        assert server.proc is not None
        server.proc.kill()  # SIGKILL: it cannot forward anything; Linux signals the workers itself
        server.proc.wait(10)
        deadline = time.monotonic() + 60
        while not all(has_exited(pid) for pid in pids.values()):
            assert time.monotonic() < deadline, f"orphaned workers:\n{server.log()}"
            time.sleep(0.05)
        log = server.log()
        for index in range(WORKERS):
            assert re.search(rf"drained in .* worker={index}\n", log), log
    finally:
        for pid in pids.values():  # never leave an orphan behind, even when the test fails
            if not has_exited(pid):
                os.kill(pid, signal.SIGKILL)


def test_workers_on_auto_threads_share_the_cores_and_explicit_settings_stay() -> None:
    from service.engine.capacity import usable_cores
    from service.settings import Settings
    from service.worker_process import worker_settings

    crowded = Settings(workers=usable_cores(), intra_op_threads=0)
    assert worker_settings(crowded).intra_op_threads == 1, "a core each: the event loop's, and one thread"
    assert worker_settings(Settings(workers=2, intra_op_threads=3)).intra_op_threads == 3
    assert worker_settings(Settings(workers=2, provider="cuda")).intra_op_threads == 0, "the engine's rule"
