"""The Open Inference Protocol (KServe V2) over the one core, for both adapters (rest_oip.py and
grpc_oip.py): server and model metadata, readiness, and inference.

A classifier takes "text" (BYTES [N]) and returns "label" (BYTES [N]) and "probabilities" (FP32 [N, C],
columns in the model's label order). Inference goes through `InferenceCore.classify`, the same call
as /v1/sentiment, so both give the same labels and probabilities for the same texts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata as package_metadata
from typing import Any

import numpy as np
from pydantic import ValidationError

from service.api.core import InferenceCore
from service.api.errors import ApiError, ErrorKind, from_validation_error, invalid
from service.api.generation import RequestRecord
from service.api.oip_tensors import BYTES, Tensor, texts
from service.api.schemas import PROMPT_FIELDS, REQUEST_ID_PATTERN, SamplingOptions
from service.registry import ModelEntry, ModelState

SERVER_NAME = "seqserve"
# binary_tensor_data: REST tensors as raw bytes after the JSON header; generate: /generate(_stream).
EXTENSIONS = ("binary_tensor_data", "generate")
MODEL_VERSION = "1"  # each folder of the models dir is one model with one version
PLATFORM = "onnxruntime_onnx"  # Triton's name for ONNX Runtime models

CLASSIFY_INPUT = "text"
LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"
GENERATE_INPUT = "text_input"
GENERATE_OUTPUT = "text_output"


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for; `binary` is its binary_data parameter, if given (REST only)."""

    name: str
    binary: bool | None = None


def client_request_id(value: str | None) -> str | None:
    """A client's request `id` names the request in the log and the x-request-id header only if it is
    a legal header value; it is echoed in the response body as given either way."""
    if value and re.fullmatch(REQUEST_ID_PATTERN, value):
        return value
    return None


def server_version() -> str:
    try:
        return package_metadata.version("seqserve")
    except package_metadata.PackageNotFoundError:
        return "0"


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": server_version(), "extensions": list(EXTENSIONS)}


def server_ready(core: InferenceCore) -> bool:
    ready, _ = core.registry.readiness()
    return ready and not core.draining


def find_model(core: InferenceCore, name: str, version: str = "") -> ModelEntry:
    """The model named in a path or message; NOT_FOUND for an unknown name or version. A registry
    lookup: this runs on every inference request."""
    if not name:
        raise invalid("model_name", "must name a model")
    if version not in ("", MODEL_VERSION):
        raise ApiError(
            ErrorKind.NOT_FOUND, f"model {name!r} has no version {version!r} (versions: {MODEL_VERSION})"
        )
    entry = core.registry.get(name)
    if entry is not None:
        return entry
    raise ApiError(ErrorKind.NOT_FOUND, f"model {name!r} not found (see GET /v1/models)")


def model_ready(core: InferenceCore, name: str, version: str = "") -> bool:
    entry = find_model(core, name, version)
    return entry.state is ModelState.READY and not core.draining


def model_metadata(core: InferenceCore, name: str, version: str = "") -> dict[str, Any]:
    """Name, versions, platform and the tensors a model takes and returns (-1: any size)."""
    view = find_model(core, name, version)
    labels = list(view.manifest.labels or []) if view.manifest else []
    inputs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    if view.task == "classify":
        inputs = [_tensor_meta(CLASSIFY_INPUT, BYTES, [-1])]
        outputs = [
            _tensor_meta(LABEL_OUTPUT, BYTES, [-1]),
            _tensor_meta(PROBABILITIES_OUTPUT, "FP32", [-1, len(labels) or -1]),
        ]
    elif view.task == "generate":  # the generate extension's names (POST .../generate)
        inputs = [_tensor_meta(GENERATE_INPUT, BYTES, [1])]
        outputs = [_tensor_meta(GENERATE_OUTPUT, BYTES, [1])]
    return {
        "name": view.name,
        "versions": [MODEL_VERSION],
        "platform": PLATFORM,
        "inputs": inputs,
        "outputs": outputs,
    }


def _tensor_meta(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape}


async def infer(
    core: InferenceCore,
    record: RequestRecord,
    model: str,
    version: str,
    inputs: Sequence[Tensor],
    requested: Sequence[RequestedOutput],
) -> tuple[str, list[Tensor]]:
    """Classify the "text" input; returns the model's name and the requested outputs (all if none)."""
    view = find_model(core, model, version)
    record.model = view.name
    if view.task == "generate":
        raise invalid(
            "model_name",
            f"{view.name!r} is a generation model: use POST /v2/models/{view.name}/generate "
            "(the generate extension) or /v1/completions",
        )
    wanted = {r.name for r in requested}
    unknown = wanted - {LABEL_OUTPUT, PROBABILITIES_OUTPUT}
    if unknown:
        raise invalid("outputs", f"unknown output {sorted(unknown)[0]!r} (outputs: label, probabilities)")
    text_input = _only_input(inputs)
    limit = core.settings.max_texts_per_request
    if len(text_input) > limit:
        raise invalid("inputs[0].shape", f"at most {limit} texts per request")
    name, results = await core.classify(record, view.name, texts(text_input, "inputs[0]"), "inputs[0].data")
    n = len(results)
    outputs = []
    if not wanted or LABEL_OUTPUT in wanted:
        outputs.append(Tensor(LABEL_OUTPUT, BYTES, [n], [r.label.encode() for r in results]))
    if not wanted or PROBABILITIES_OUTPUT in wanted:
        columns = list(results[0].probabilities)
        probs = np.array([[r.probabilities[c] for c in columns] for r in results], dtype=np.float32)
        outputs.append(Tensor(PROBABILITIES_OUTPUT, "FP32", [n, len(columns)], probs.reshape(-1)))
    order = [r.name for r in requested]
    if order:
        outputs.sort(key=lambda t: order.index(t.name))
    return name, outputs


def _only_input(inputs: Sequence[Tensor]) -> Tensor:
    if len(inputs) != 1 or inputs[0].name != CLASSIFY_INPUT:
        names = [t.name for t in inputs]
        raise invalid("inputs", f"a classifier takes one input named {CLASSIFY_INPUT!r}, got {names}")
    tensor = inputs[0]
    if len(tensor) == 0:
        raise invalid("inputs[0].shape", "must hold at least one text")
    if len(tensor.shape) != 1 and not (len(tensor.shape) == 2 and tensor.shape[1] == 1):
        raise invalid("inputs[0].shape", f"must be [N] (or [N, 1]), not {tensor.shape}")
    return tensor


def generate_options(parameters: dict[str, Any] | None) -> SamplingOptions:
    """The generate extension's `parameters` as the shared sampling options (same names, defaults and
    limits as /v1/generate's `params`). One text_output per request: n is 1 and logprobs have no place."""
    values = dict(parameters or {})
    values.pop("stream", None)  # the route (generate or generate_stream) decides
    try:
        options = SamplingOptions.model_validate(values)
    except ValidationError as exc:
        raise from_validation_error(exc, "parameters.") from None
    if options.n != 1:
        raise invalid("parameters.n", "must be 1 (one text_output per request)")
    if options.logprobs is not None or options.prompt_logprobs:
        raise invalid("parameters.logprobs", "not supported by the generate extension; use /v1/generate")
    return options


def generate_param(engine_field: str) -> str:
    """The generate extension's name of a field the engine or the core names."""
    if engine_field in PROMPT_FIELDS:
        return "text_input"
    return "parameters." + SamplingOptions.api_name(engine_field)


def generate_message(model: str, request_id: str | None, text: str) -> dict[str, Any]:
    """A generate response, or one event of generate_stream (text_output is then the new text)."""
    message: dict[str, Any] = {"model_name": model, "model_version": MODEL_VERSION, "text_output": text}
    if request_id is not None:
        message["id"] = request_id
    return message
