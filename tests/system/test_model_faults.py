"""R6 model faults: a server started over one corrupted graph (hashes updated, so only loading can
catch it) and one manifest with a wrong hash refuses both clearly — one ERROR line each, state
"failed" with the reason, not ready on /metrics and gRPC health, 503 / UNAVAILABLE — and serves
the others."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.loadgen import Call, Clients, Protocol, drive
from harness.metrics_reader import sample
from harness.server_process import ServerProcess
from service.api.generated.seqserve.v1 import inference_pb2 as pb
from service.api.generated.seqserve.v1 import inference_pb2_grpc as pb_grpc
from tests.api.conftest import copy_model
from tests.system.conftest import Models

CORRUPT, WRONG_HASH = "corrupt-graph", "wrong-hash"
PROTOCOLS: tuple[Protocol, ...] = ("rest", "grpc")


def faulty_models_dir(models: Models, root: Path) -> Path:
    """The served models plus the two faulty copies of the generation model."""
    root.mkdir()
    for folder in models.root.iterdir():
        (root / folder.name).symlink_to(folder.resolve())
    source = (models.root / models.generate).resolve()
    corrupt = copy_model(source, root / CORRUPT, CORRUPT)
    graph = bytearray((corrupt / "model.onnx").read_bytes())
    graph[: len(graph) // 2] = bytes(len(graph) // 2)  # zero the first half: not a loadable graph
    (corrupt / "model.onnx").write_bytes(bytes(graph))
    manifest = json.loads((corrupt / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = {"sha256": hashlib.sha256(graph).hexdigest(), "bytes": len(graph)}
    (corrupt / "manifest.json").write_text(json.dumps(manifest, indent=2))
    wrong = copy_model(source, root / WRONG_HASH, WRONG_HASH)
    manifest = json.loads((wrong / "manifest.json").read_text())
    manifest["files"]["tokenizer.json"]["sha256"] = "0" * 64
    (wrong / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


def test_a_corrupted_graph_and_a_wrong_hash_are_refused_clearly_and_the_rest_is_served(
    system_models: Models, serve: Callable[..., ServerProcess], tmp_path: Path, record: Callable
) -> None:
    server = serve(faulty_models_dir(system_models, tmp_path / "models"), max_new_tokens=32)
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        listed = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
        ready = http.get("/readyz").status_code
        refused = [
            http.post("/v1/generate", json={"model": m, "prompt": "To be"}).status_code
            for m in (CORRUPT, WRONG_HASH)
        ]
        gauges = {m: sample(http, "seqserve_model_ready", model=m) for m in listed}
    with grpc.insecure_channel(server.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        serving = {
            m: health.Check(health_pb2.HealthCheckRequest(service=m), timeout=10).status
            == health_pb2.HealthCheckResponse.SERVING
            for m in listed
        }
        stub = pb_grpc.InferenceStub(channel)
        codes = []
        for m in (CORRUPT, WRONG_HASH):
            try:
                stub.Generate(pb.GenerateRequest(model=m, prompt="To be"), timeout=10)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())

    async def served() -> list:
        async with Clients(server.url, server.grpc_target, 4, timeout_s=60.0) as clients:
            calls = [Call(p, s, system_models.generate, "To be", 8) for p in PROTOCOLS for s in (False, True)]
            return await asyncio.wait_for(drive(clients, calls, 4), 120.0)

    good = asyncio.run(served())
    errors = [line for line in server.log().splitlines() if " ERROR " in line]
    record("r6_model_faults", {"models": {m: (e["state"], e.get("error")) for m, e in listed.items()}})

    assert ready == 200
    for bad in (CORRUPT, WRONG_HASH):
        assert listed[bad]["state"] == "failed" and listed[bad]["error"], listed[bad]
        assert gauges[bad] == 0 and not serving[bad]
        assert len([line for line in errors if bad in line]) == 1, errors
    assert "sha256" in listed[WRONG_HASH]["error"] or "hash" in listed[WRONG_HASH]["error"]
    assert refused == [503, 503]
    assert codes == [grpc.StatusCode.UNAVAILABLE] * 2
    for name in (system_models.generate, system_models.classify):
        assert listed[name]["ready"] and gauges[name] == 1 and serving[name]
    assert all(o.complete for o in good), good
