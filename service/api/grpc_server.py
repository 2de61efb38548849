"""The grpc.aio server: the Inference servicer (a thin adapter over the core), the Open Inference
Protocol's GRPCInferenceService (grpc_oip.py), standard health (overall "", each service, and one
entry per model) and server reflection.

A client cancel or a passed deadline cancels the handler's task; the `finally` blocks then cancel
the generation, whose slot the scheduler frees at its next step.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from service.api import grpc_convert as convert
from service.api import grpc_oip, native
from service.api.core import InferenceCore
from service.api.errors import ApiError, fields_named_by
from service.api.generated.seqserve.v1 import inference_pb2 as pb
from service.api.generation import Generation, RequestRecord
from service.api.grpc_wire import Malformed, safe_deserializer, unary_handler
from service.api.middleware import key_matches
from service.api.schemas import REQUEST_ID_PATTERN, native_param
from service.registry import ModelEntry, ModelState
from service.settings import Settings

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["Inference"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class InferenceServicer:
    """Each method: check the key, parse, call the core, convert; ApiError becomes the status."""

    def __init__(self, core: InferenceCore, settings: Settings) -> None:
        self.core = core
        self.api_key = settings.api_key

    async def _admit(self, request: Any, context: grpc.aio.ServicerContext) -> str | None:
        """Auth and parse checks before any work; returns the client's request id."""
        metadata = dict(context.invocation_metadata() or ())
        if self.api_key and not key_matches(metadata.get("authorization"), self.api_key):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key")
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        rid = getattr(request, "request_id", "")
        if not re.fullmatch(REQUEST_ID_PATTERN, rid):  # echoed as metadata: must be a legal header value
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "request_id: must be at most 128 visible ASCII characters"
            )
        from_metadata = metadata.get("x-request-id") or ""
        if not rid and not re.fullmatch(REQUEST_ID_PATTERN, from_metadata):  # as REST's X-Request-Id
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "x-request-id: must be at most 128 visible ASCII characters (no spaces)",
            )
        return rid or from_metadata or None

    async def _submit(
        self,
        record: RequestRecord,
        request: pb.GenerateRequest,
        context: grpc.aio.ServicerContext,
        stream: bool,
    ) -> Generation:
        """The one path from a GenerateRequest to the core, shared by the unary and streaming calls.
        The client's deadline bounds the queue wait like the request's own `timeout`."""
        prompt = convert.prompt(request)
        waits = [request.timeout] if request.HasField("timeout") else []
        if (remaining := context.time_remaining()) is not None:
            waits.append(max(remaining, 0.0))
        with fields_named_by(native_param):
            return await self.core.submit(
                record,
                request.model or None,
                [prompt],
                convert.options(request.params),
                stream=stream,
                queue_timeout=min(waits, default=None),
            )

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GenerateResponse:
        rid = await self._admit(request, context)
        try:
            async with self.core.track("grpc.Generate", rid) as record:
                gen = await self._submit(record, request, context, stream=False)
                try:
                    results = await gen.results()
                finally:
                    if not gen.done:
                        gen.cancel()  # cancelled or past its deadline: free the slot
                if failure := gen.failure():
                    raise failure
                await context.send_initial_metadata((("x-request-id", record.request_id),))
                return convert.generate_response(native.response(gen, results[0]))
        except ApiError as exc:
            await context.abort(exc.kind.grpc_code, exc.message)

    async def GenerateStream(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        rid = await self._admit(request, context)
        try:
            async with self.core.track("grpc.GenerateStream", rid) as record:
                gen = await self._submit(record, request, context, stream=True)
                try:
                    await context.send_initial_metadata((("x-request-id", record.request_id),))
                    first = True
                    async for batch in gen.event_batches():
                        # Tokens that arrived together travel in one message (a lagging stream).
                        for message in native.stream_messages(gen, (event for _, event in batch), first):
                            yield convert.stream_response(message)
                        first = False
                finally:
                    if not gen.done:
                        gen.cancel()
                if failure := gen.failure():
                    raise failure
        except ApiError as exc:
            await context.abort(exc.kind.grpc_code, exc.message)

    async def Classify(
        self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyResponse:
        rid = await self._admit(request, context)
        try:
            async with self.core.track("grpc.Classify", rid) as record:
                name, results = await self.core.classify(record, request.model or None, list(request.texts))
                return convert.classify_response(record.request_id, name, results)
        except ApiError as exc:
            await context.abort(exc.kind.grpc_code, exc.message)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        await self._admit(request, context)
        async with self.core.track("grpc.ListModels"):
            return pb.ListModelsResponse(models=[convert.model_info(m) for m in self.core.models()])


def _handler(servicer: InferenceServicer) -> grpc.GenericRpcHandler:
    """Registered by hand (not the generated add_*_to_server) to use the forgiving deserializer."""

    methods = {
        "Generate": unary_handler(servicer.Generate, pb.GenerateRequest, pb.GenerateResponse),
        "GenerateStream": grpc.unary_stream_rpc_method_handler(
            servicer.GenerateStream,
            request_deserializer=safe_deserializer(pb.GenerateRequest),
            response_serializer=pb.GenerateStreamResponse.SerializeToString,
        ),
        "Classify": unary_handler(servicer.Classify, pb.ClassifyRequest, pb.ClassifyResponse),
        "ListModels": unary_handler(servicer.ListModels, pb.ListModelsRequest, pb.ListModelsResponse),
    }
    return grpc.method_handlers_generic_handler(SERVICE, methods)


class HealthReporter:
    """Keeps grpc.health.v1 in step with the registry: "" and the service name follow readiness,
    each model name its own state; all NOT_SERVING once draining."""

    def __init__(self, core: InferenceCore) -> None:
        self.core = core
        self.servicer = HealthServicer()
        self._tasks: set[asyncio.Task[None]] = set()

    async def refresh(self) -> None:
        ready, _ = self.core.registry.readiness()
        overall = SERVING if ready and not self.core.draining else NOT_SERVING
        await self.servicer.set("", overall)
        await self.servicer.set(SERVICE, overall)
        await self.servicer.set(grpc_oip.SERVICE, overall)
        for entry in self.core.registry.entries():
            ok = entry.state is ModelState.READY and not self.core.draining
            await self.servicer.set(entry.name, SERVING if ok else NOT_SERVING)

    def on_change(self, _entry: ModelEntry | None) -> None:
        task = asyncio.get_running_loop().create_task(self.refresh())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def build_server(
    core: InferenceCore, settings: Settings
) -> tuple[grpc.aio.Server, HealthReporter, int]:
    """A started-ready (not yet started) server bound to the configured address; returns the bound port."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            # Shared only by SEQSERVE_WORKERS > 1 workers; one process fails on a port in use.
            ("grpc.so_reuseport", int(settings.workers > 1)),
        ]
    )
    server.add_generic_rpc_handlers(
        (_handler(InferenceServicer(core, settings)), grpc_oip.handler(grpc_oip.OipServicer(core, settings)))
    )
    health = HealthReporter(core)
    await health.refresh()
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    core.registry.add_listener(health.on_change)
    health_service = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection(
        (SERVICE, grpc_oip.SERVICE, health_service, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
    if port == 0:
        raise RuntimeError(f"gRPC could not bind {settings.grpc_host}:{settings.grpc_port}")
    return server, health, port
