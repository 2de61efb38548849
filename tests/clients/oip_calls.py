"""Calls a live seqserve with one stock Open Inference Protocol client, unmodified and with its default
settings, and prints what it got back as JSON. Runs in .venv-clients (see requirements.txt), one client
per process: tritonclient.grpc and kserve each register the `inference` protobuf package, and one
process cannot hold both.

    python oip_calls.py {triton-http,triton-grpc,kserve-rest,kserve-grpc} HTTP_URL GRPC_TARGET MODEL TEXT...
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np

TIMEOUT_S = 30.0


def _texts(texts: list[str]) -> np.ndarray:
    return np.array([t.encode() for t in texts], dtype=np.object_)


def _decoded(labels: np.ndarray) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else str(x) for x in labels.reshape(-1)]


def triton(kind: str, http_url: str, grpc_target: str, model: str, texts: list[str]) -> dict[str, Any]:
    if kind == "http":
        import tritonclient.http as client_module

        client = client_module.InferenceServerClient(
            http_url.removeprefix("http://"), network_timeout=TIMEOUT_S
        )
    else:
        import tritonclient.grpc as client_module

        client = client_module.InferenceServerClient(grpc_target)
    from tritonclient.utils import InferenceServerException

    text = client_module.InferInput("text", [len(texts)], "BYTES")
    text.set_data_from_numpy(_texts(texts))  # binary_data=True by default over HTTP
    result = client.infer(model, [text])  # all outputs, binary by default over HTTP
    only = client.infer(model, [text], outputs=[client_module.InferRequestedOutput("probabilities")])
    server = client.get_server_metadata()
    meta = client.get_model_metadata(model)
    if kind == "grpc":  # protobuf messages: read the same fields
        server = {"name": server.name, "extensions": list(server.extensions)}
        meta = {
            "inputs": [{"name": t.name} for t in meta.inputs],
            "outputs": [{"name": t.name} for t in meta.outputs],
        }
    try:
        client.infer("no-such-model", [text])
        missing_error = ""
    except InferenceServerException as exc:
        missing_error = str(exc)
    return {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "server_name": server["name"],
        "extensions": server["extensions"],
        "inputs": [t["name"] for t in meta["inputs"]],
        "outputs": [t["name"] for t in meta["outputs"]],
        "label": _decoded(result.as_numpy("label")),
        "probabilities": result.as_numpy("probabilities").tolist(),
        "only_probabilities": only.as_numpy("probabilities").tolist(),
        "only_has_label": only.as_numpy("label") is not None,
        "missing_model_error": missing_error,
    }


async def kserve_rest(http_url: str, model: str, texts: list[str]) -> dict[str, Any]:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    out: dict[str, Any] = {}
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=TIMEOUT_S)) as client:
        out["live"] = await client.is_server_live(http_url)
        out["ready"] = await client.is_server_ready(http_url)
        out["model_ready"] = await client.is_model_ready(http_url, model)
        for binary in (True, False):  # set_data_from_numpy's default is binary
            text = InferInput("text", [len(texts)], "BYTES")
            text.set_data_from_numpy(_texts(texts), binary_data=binary)
            request = InferRequest(model_name=model, infer_inputs=[text], request_id=f"kserve-{binary}")
            response = await client.infer(http_url, request, model_name=model)
            outputs = {o.name: o.as_numpy() for o in response.outputs}
            out["binary" if binary else "json"] = {
                "id": response.id,
                "label": _decoded(outputs["label"]),
                "probabilities": outputs["probabilities"].tolist(),
            }
    return out


async def kserve_grpc(grpc_target: str, model: str, texts: list[str]) -> dict[str, Any]:
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    client = InferenceGRPCClient(grpc_target, timeout=TIMEOUT_S)
    try:
        text = InferInput("text", [len(texts)], "BYTES")
        text.set_data_from_numpy(_texts(texts))
        response = await client.infer(
            InferRequest(model_name=model, infer_inputs=[text], request_id="kserve-grpc")
        )
        outputs = {o.name: o.as_numpy() for o in response.outputs}
        return {
            "live": await client.is_server_live(),
            "ready": await client.is_server_ready(),
            "model_ready": await client.is_model_ready(model),
            "id": response.id,
            "label": _decoded(outputs["label"]),
            "probabilities": outputs["probabilities"].tolist(),
        }
    finally:
        await client.close()


def main(argv: list[str]) -> int:
    kind, http_url, grpc_target, model, *texts = argv
    if kind == "triton-http":
        result = triton("http", http_url, grpc_target, model, texts)
    elif kind == "triton-grpc":
        result = triton("grpc", http_url, grpc_target, model, texts)
    elif kind == "kserve-rest":
        result = asyncio.run(kserve_rest(http_url, model, texts))
    elif kind == "kserve-grpc":
        result = asyncio.run(kserve_grpc(grpc_target, model, texts))
    else:
        raise SystemExit(f"unknown client {kind!r}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
