"""`inference.GRPCInferenceService`, the Open Inference Protocol (KServe V2) over gRPC: a thin adapter
over oip.py, served on the same port as seqserve's own service.

Input data comes in `raw_input_contents` (tritonclient, kserve with binary data) or in each input's
typed `contents`; outputs always go back in `raw_output_contents`, which is what tritonclient reads.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np

from service.api import oip
from service.api.core import InferenceCore
from service.api.errors import ApiError, invalid
from service.api.generated.inference import grpc_predict_v2_pb2 as pb
from service.api.grpc_wire import Malformed, unary_handler
from service.api.middleware import key_matches
from service.api.oip_tensors import BYTES, NUMERIC, Tensor, check_datatype, element_count, from_raw, to_raw
from service.settings import Settings

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name

# Which typed list of InferTensorContents holds each datatype (the protocol's table).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    BYTES: "bytes_contents",
}


class OipServicer:
    """Each method: check the key, parse, call oip.py; an ApiError becomes the status."""

    def __init__(self, core: InferenceCore, settings: Settings) -> None:
        self.core = core
        self.api_key = settings.api_key

    async def _admit(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata() or ())
        if self.api_key and not key_matches(metadata.get("authorization"), self.api_key):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key")
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        await self._admit(request, context)
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        await self._admit(request, context)
        return pb.ServerReadyResponse(ready=oip.server_ready(self.core))

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        await self._admit(request, context)
        try:
            return pb.ModelReadyResponse(ready=oip.model_ready(self.core, request.name, request.version))
        except ApiError as exc:
            await context.abort(exc.kind.grpc_code, exc.message)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        await self._admit(request, context)
        return pb.ServerMetadataResponse(**oip.server_metadata())

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        await self._admit(request, context)
        try:
            meta = oip.model_metadata(self.core, request.name, request.version)
        except ApiError as exc:
            await context.abort(exc.kind.grpc_code, exc.message)
        tensors = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensors(**t) for t in meta["inputs"]],
            outputs=[tensors(**t) for t in meta["outputs"]],
        )

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        await self._admit(request, context)
        metadata = dict(context.invocation_metadata() or ())
        rid = oip.client_request_id(request.id) or metadata.get("x-request-id")
        try:
            async with self.core.track("grpc.ModelInfer", rid) as record:
                inputs = _inputs(request)
                requested = [oip.RequestedOutput(o.name) for o in request.outputs]
                name, outputs = await oip.infer(
                    self.core, record, request.model_name, request.model_version, inputs, requested
                )
                await context.send_initial_metadata((("x-request-id", record.request_id),))
                return pb.ModelInferResponse(
                    model_name=name,
                    model_version=oip.MODEL_VERSION,
                    id=request.id,
                    outputs=[
                        pb.ModelInferResponse.InferOutputTensor(
                            name=t.name, datatype=t.datatype, shape=t.shape
                        )
                        for t in outputs
                    ],
                    raw_output_contents=[to_raw(t) for t in outputs],
                )
        except ApiError as exc:
            await context.abort(exc.kind.grpc_code, exc.message)


def _inputs(request: pb.ModelInferRequest) -> list[Tensor]:
    """The input tensors, from raw_input_contents (all inputs) or each input's typed contents."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise invalid("raw_input_contents", f"{len(raw)} entries for {len(request.inputs)} inputs")
    tensors = []
    for i, given in enumerate(request.inputs):
        field = f"inputs[{i}]"
        shape = list(given.shape)
        if raw:
            tensors.append(from_raw(given.name, given.datatype, shape, raw[i], field))
        else:
            tensors.append(_from_contents(given, shape, field))
    return tensors


def _from_contents(given: pb.ModelInferRequest.InferInputTensor, shape: list[int], field: str) -> Tensor:
    check_datatype(given.datatype, field + ".datatype")
    if given.datatype == "FP16":
        raise invalid(field + ".contents", "FP16 data travels in raw_input_contents only")
    count = element_count(shape, field + ".shape")
    values = getattr(given.contents, _CONTENTS_FIELD[given.datatype])
    if len(values) != count:
        raise invalid(f"{field}.contents", f"holds {len(values)} elements; shape {shape} needs {count}")
    if given.datatype == BYTES:
        return Tensor(given.name, BYTES, shape, list(values))
    try:
        data = np.array(values, dtype=NUMERIC[given.datatype])
    except OverflowError:
        raise invalid(f"{field}.contents", f"a value does not fit {given.datatype}") from None
    return Tensor(given.name, given.datatype, shape, data)


def handler(servicer: OipServicer) -> grpc.GenericRpcHandler:
    """Registered by hand (as grpc_server.py does) to use the forgiving deserializer."""

    methods = {
        "ServerLive": unary_handler(servicer.ServerLive, pb.ServerLiveRequest, pb.ServerLiveResponse),
        "ServerReady": unary_handler(servicer.ServerReady, pb.ServerReadyRequest, pb.ServerReadyResponse),
        "ModelReady": unary_handler(servicer.ModelReady, pb.ModelReadyRequest, pb.ModelReadyResponse),
        "ServerMetadata": unary_handler(
            servicer.ServerMetadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse
        ),
        "ModelMetadata": unary_handler(
            servicer.ModelMetadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse
        ),
        "ModelInfer": unary_handler(servicer.ModelInfer, pb.ModelInferRequest, pb.ModelInferResponse),
    }
    return grpc.method_handlers_generic_handler(SERVICE, methods)
