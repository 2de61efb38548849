"""The Open Inference Protocol (KServe V2) over REST: health, metadata, /infer with the binary tensor
data extension, and the generate extension (/generate, /generate_stream as SSE).

Binary tensor data: the header `Inference-Header-Content-Length: L` says the body's first L bytes are
the JSON request; the raw data of each input with `parameters.binary_data_size` follows, in input
order. Outputs go back raw when the request or the output asks for `binary_data` (tritonclient's
default), and then the response carries the same header. Errors are `{"error": "<message>"}`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.api import native, oip
from service.api.core import InferenceCore
from service.api.errors import ErrorKind, fields_named_by, invalid
from service.api.generation import Generation
from service.api.oip_tensors import Tensor, from_json, from_raw, to_json_data, to_raw
from service.api.openapi_bodies import json_body, json_or_binary_body
from service.api.rest_support import (
    EventStream,
    adopt_request_id,
    parse_body,
    parse_json,
    request_id,
    sse,
    unless_disconnected,
)
from service.api.schemas import OipGenerateBody, OipInferBody, OipInput

HEADER_LENGTH = "inference-header-content-length"
router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (KServe V2)"])
_MODEL = "/models/{model_name}"
_VERSION = "/models/{model_name}/versions/{model_version}"


def _core(request: Request) -> InferenceCore:
    return request.app.state.core


# ---- health and metadata -----------------------------------------------------------------------------
@router.get("/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    """200 when every model is loaded and the server is not draining; 503 (as /readyz) otherwise."""
    is_ready = oip.server_ready(_core(request))
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return oip.server_metadata()


@router.get(_MODEL)
@router.get(_VERSION)
async def model_metadata(request: Request, model_name: str, model_version: str = "") -> dict[str, Any]:
    return oip.model_metadata(_core(request), model_name, model_version)


@router.get(_MODEL + "/ready")
@router.get(_VERSION + "/ready")
async def model_ready(request: Request, model_name: str, model_version: str = "") -> JSONResponse:
    """200 when the model takes requests, 503 while it loads, failed to load, or the server drains."""
    is_ready = oip.model_ready(_core(request), model_name, model_version)
    body = {"name": model_name, "ready": is_ready}
    return JSONResponse(body, status_code=200 if is_ready else 503)


# ---- inference ---------------------------------------------------------------------------------------
@router.post(_MODEL + "/infer", openapi_extra=json_or_binary_body(OipInferBody))
@router.post(_VERSION + "/infer", openapi_extra=json_or_binary_body(OipInferBody))
async def infer(request: Request, model_name: str, model_version: str = "") -> Response:
    core = _core(request)
    async with core.track("/v2/infer", request_id(request)) as record:
        raw = await request.body()
        header, binary = _split(raw, request.headers.get(HEADER_LENGTH))
        body = parse_json(header, OipInferBody)
        _same_model(body, model_name, model_version)
        adopt_request_id(request, record, oip.client_request_id(body.id))
        inputs = _inputs(body.inputs, binary)
        requested = [
            oip.RequestedOutput(o.name, _flag(o.parameters, "binary_data", f"outputs[{i}].parameters"))
            for i, o in enumerate(body.outputs or [])
        ]
        name, outputs = await oip.infer(core, record, model_name, model_version, inputs, requested)
        # Each output's own binary_data wins over the request's binary_data_output (default: JSON).
        default = _flag(body.parameters, "binary_data_output", "parameters") or False
        asked = {r.name: r.binary for r in requested}
        as_binary = [default if asked.get(t.name) is None else bool(asked[t.name]) for t in outputs]
        return _infer_response(name, body.id, record.request_id, outputs, as_binary)


def _same_model(body: OipInferBody, model_name: str, model_version: str) -> None:
    if body.model_name is not None and body.model_name != model_name:
        raise invalid("model_name", f"{body.model_name!r} differs from the model in the path, {model_name!r}")
    if body.model_version and model_version and body.model_version != model_version:
        raise invalid("model_version", f"{body.model_version!r} differs from the path's {model_version!r}")


def _split(raw: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary data) of a request body."""
    if header_length is None:
        return raw, b""
    if not header_length.strip().isdigit() or int(header_length) > len(raw):
        raise invalid(
            "Inference-Header-Content-Length",
            f"must be a byte count within the body ({len(raw)} bytes), not {header_length!r}",
        )
    length = int(header_length)
    return raw[:length], raw[length:]


def _inputs(inputs: Sequence[OipInput], binary: bytes) -> list[Tensor]:
    """Every input tensor: raw ones take their `binary_data_size` bytes of `binary`, in order."""
    tensors = []
    offset = 0
    for i, given in enumerate(inputs):
        field = f"inputs[{i}]"
        size = (given.parameters or {}).get("binary_data_size")
        if size is None:
            if given.data is None:
                raise invalid(field + ".data", "required (or send it raw with parameters.binary_data_size)")
            tensors.append(from_json(given.name, given.datatype, given.shape, given.data, field))
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise invalid(field + ".parameters.binary_data_size", "must be a byte count (an integer >= 0)")
        if given.data is not None:
            raise invalid(field + ".data", "give data or parameters.binary_data_size, not both")
        if offset + size > len(binary):
            raise invalid(
                field + ".parameters.binary_data_size",
                f"{size} bytes from offset {offset} run past the binary data ({len(binary)} bytes)",
            )
        chunk = binary[offset : offset + size]
        offset += size
        tensors.append(from_raw(given.name, given.datatype, given.shape, chunk, field))
    if offset != len(binary):
        raise invalid("body", f"{len(binary) - offset} bytes of binary data belong to no input")
    return tensors


def _flag(parameters: dict[str, Any] | None, key: str, field: str) -> bool | None:
    value = (parameters or {}).get(key)
    if value is not None and not isinstance(value, bool):
        raise invalid(f"{field}.{key}", "must be true or false")
    return value


def _infer_response(
    model: str, client_id: str | None, request_id: str, outputs: list[Tensor], as_binary: list[bool]
) -> Response:
    described: list[dict[str, Any]] = []
    raw_parts: list[bytes] = []
    for tensor, binary in zip(outputs, as_binary, strict=True):
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if binary:
            raw = to_raw(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            raw_parts.append(raw)
        else:
            entry["data"] = to_json_data(tensor)
        described.append(entry)
    payload: dict[str, Any] = {"model_name": model, "model_version": oip.MODEL_VERSION}
    if client_id is not None:
        payload["id"] = client_id
    payload["outputs"] = described
    header = orjson.dumps(payload)
    headers = {"x-request-id": request_id}
    if not raw_parts:
        return Response(header, media_type="application/json", headers=headers)
    headers["inference-header-content-length"] = str(len(header))
    return Response(header + b"".join(raw_parts), media_type="application/octet-stream", headers=headers)


# ---- generate extension ------------------------------------------------------------------------------
@router.post(_MODEL + "/generate", openapi_extra=json_body(OipGenerateBody))
@router.post(_VERSION + "/generate", openapi_extra=json_body(OipGenerateBody))
async def generate(request: Request, model_name: str, model_version: str = "") -> Response:
    return await _generate(request, model_name, model_version, stream=False)


@router.post(_MODEL + "/generate_stream", openapi_extra=json_body(OipGenerateBody))
@router.post(_VERSION + "/generate_stream", openapi_extra=json_body(OipGenerateBody))
async def generate_stream(request: Request, model_name: str, model_version: str = "") -> Response:
    return await _generate(request, model_name, model_version, stream=True)


async def _generate(request: Request, model_name: str, model_version: str, stream: bool) -> Response:
    core = _core(request)
    route = "/v2/generate_stream" if stream else "/v2/generate"
    async with core.track(route, request_id(request)) as record:
        body = await parse_body(request, OipGenerateBody)
        adopt_request_id(request, record, oip.client_request_id(body.id))
        view = oip.find_model(core, model_name, model_version)
        options = oip.generate_options(body.parameters)
        with fields_named_by(oip.generate_param):
            gen = await core.submit(record, view.name, [body.text_input], options, stream=stream)
        if stream:
            record.detached = True  # the stream closes the record when it ends
            return EventStream(_stream(core, gen, body.id), on_close=lambda: core.close_generation(gen))
        results = await unless_disconnected(request, gen.results(), gen.cancel)
        if failure := gen.failure():
            raise failure
        output = results[0].outputs[0]
        message = oip.generate_message(gen.model, body.id, output.text)
        message["finish_reason"] = output.finish_reason
        message["usage"] = native.usage(results[0].usage)
        return JSONResponse(message, headers={"x-request-id": record.request_id})


async def _stream(core: InferenceCore, gen: Generation, client_id: str | None) -> AsyncIterator[bytes]:
    """One SSE event per batch of new text; the last one carries finish_reason and usage. A stream the
    server stopped (drain timeout, queue time limit) ends with an `{"error": ...}` event."""
    first = True
    async for batch in gen.event_batches():
        chunks = []
        for message in native.stream_messages(gen, (event for _, event in batch), first):
            event = oip.generate_message(gen.model, client_id, message["text"])
            for key in ("finish_reason", "usage", "error"):
                if key in message:
                    event[key] = message[key]
            chunks.append(sse(event))
        first = False
        yield b"".join(chunks)
    failure = gen.failure()
    if failure is not None and failure.kind is not ErrorKind.INTERNAL:
        yield sse(failure.oip_body())
    core.close_generation(gen)
