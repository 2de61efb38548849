"""R5 gRPC fuzzing: hostile messages on every method of seqserve.v1.Inference and of the Open Inference
Protocol's inference.GRPCInferenceService get only well-defined status codes (OK or a client-error code),
never UNKNOWN/INTERNAL, and the server stays ready."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import grpc
import httpx

from harness.server_process import ServerProcess
from tests.system.conftest import Models, Scale
from tests.system.grpc_cases import Case, CaseMaker

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.FAILED_PRECONDITION,
}
CALL_TIMEOUT_S = 30.0


def _raw(data: bytes) -> bytes:
    return data


async def call(channel: grpc.aio.Channel, case: Case) -> grpc.StatusCode:
    """Send the raw bytes; read a stream to its end. Returns the final status code."""
    path = case.method
    try:
        if case.streams:
            stream = channel.unary_stream(path, request_serializer=_raw, response_deserializer=_raw)
            async for _ in stream(case.payload, timeout=CALL_TIMEOUT_S):
                pass
        else:
            unary = channel.unary_unary(path, request_serializer=_raw, response_deserializer=_raw)
            await unary(case.payload, timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def test_fuzzed_grpc_messages_get_only_well_defined_status_codes(
    system_models: Models, scale: Scale, serve: Callable[..., ServerProcess], record: Callable
) -> None:
    server = serve(system_models.root, max_slots=8, max_queue=256, max_new_tokens=32)
    served = [system_models.generate, system_models.recurrent, system_models.classify]
    maker = CaseMaker(seed=11, models=served)
    cases = [maker.make(i) for i in range(scale.grpc_fuzz_cases)]

    async def scenario() -> list[grpc.StatusCode]:
        limit = asyncio.Semaphore(8)
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:

            async def bounded(case: Case) -> grpc.StatusCode:
                async with limit:
                    return await call(channel, case)

            return await asyncio.wait_for(asyncio.gather(*(bounded(c) for c in cases)), 600.0)

    codes = asyncio.run(scenario())
    outcomes = list(zip(cases, codes, strict=True))
    bad = [(i, c.method, c.note, code.name) for i, (c, code) in enumerate(outcomes) if code not in ALLOWED]
    tally = Counter(f"{c.method}:{code.name}" for c, code in outcomes)
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        ready = http.get("/readyz").status_code
    record("r5_grpc_fuzz", {"cases": len(cases), "codes": dict(sorted(tally.items())), "bad": bad[:20]})
    assert not bad, bad[:10]
    assert ready == 200
