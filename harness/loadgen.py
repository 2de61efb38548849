"""An asyncio load generator for `python -m service`: native generation over REST and gRPC and OpenAI
completions, unary and streaming, with per-request outcome and timings (TTFT, inter-token gaps, end
to end).

Our own client rather than k6/locust: it speaks gRPC streaming and SSE in one process, records token
timings, and every call carries a timeout so a scenario always ends by itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
import grpc

from service.api.generated.seqserve.v1 import inference_pb2 as pb
from service.api.generated.seqserve.v1 import inference_pb2_grpc as pb_grpc

# rest: native /v1/generate (SSE when streamed); openai: /v1/completions (SSE when streamed); grpc.
Protocol = Literal["rest", "openai", "grpc"]
COMPLETE_FINISHES = ("length", "stop")
GRPC_FINISH = {pb.FINISH_REASON_LENGTH: "length", pb.FINISH_REASON_STOP: "stop"}


@dataclass(frozen=True)
class Call:
    """One request to make: which API, streamed or not, and the generation it asks for."""

    protocol: Protocol
    stream: bool
    model: str
    prompt: str
    max_tokens: int
    # Hang up (close the stream / cancel the call) after this many tokens: a client that goes away.
    hang_up_after: int | None = None
    temperature: float = 0.8
    seed: int = 1


@dataclass
class Outcome:
    """What came back. `status` is HTTP-style for REST and the gRPC code name for gRPC."""

    call: Call
    status: int | str = 0
    complete: bool = False
    tokens: int = 0
    e2e_s: float = 0.0
    ttft_s: float | None = None
    gaps_s: list[float] = field(default_factory=list)
    error: str = ""
    retries: int = 0
    retry_after: str | None = None  # the Retry-After header of a REST refusal

    @property
    def server_error(self) -> bool:
        """A 5xx, or a gRPC status that means the server failed rather than refused."""
        if isinstance(self.status, int):
            return self.status >= 500
        return self.status in ("UNKNOWN", "INTERNAL", "DATA_LOSS", "UNIMPLEMENTED")

    @property
    def refused(self) -> bool:
        return self.status in (429, "RESOURCE_EXHAUSTED")


class Clients:
    """One shared HTTP connection pool and one gRPC channel, sized for `concurrency` callers."""

    def __init__(
        self,
        url: str,
        grpc_target: str,
        concurrency: int,
        timeout_s: float = 120.0,
        on_first_token: Callable[[], None] | None = None,
    ) -> None:
        self.http = aiohttp.ClientSession(
            base_url=url,
            connector=aiohttp.TCPConnector(limit=concurrency + 8),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        )
        self.channel = grpc.aio.insecure_channel(grpc_target)
        self.stub = pb_grpc.InferenceStub(self.channel)
        self.timeout_s = timeout_s
        self.on_first_token = on_first_token

    async def __aenter__(self) -> Clients:
        return self

    async def connect(self, connections: int) -> None:
        """Open the gRPC channel and `connections` pooled HTTP connections before a burst, so the
        burst's latency measures the server rather than TCP handshakes."""
        await self.channel.channel_ready()

        async def touch() -> None:
            async with self.http.get("/healthz") as response:
                await response.read()  # read to the end: the connection goes back to the pool

        await asyncio.gather(*(touch() for _ in range(connections)))

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()
        await self.channel.close()

    async def run(self, call: Call) -> Outcome:
        """Make one call; transport failures become an outcome (status 0), never an exception."""
        outcome = Outcome(call)
        start = time.perf_counter()
        for attempt in range(2):
            try:
                if call.protocol == "rest":
                    await self._rest(call, outcome, start)
                elif call.protocol == "openai":
                    await self._openai(call, outcome, start)
                else:
                    await self._grpc(call, outcome, start)
            except grpc.aio.AioRpcError as e:
                outcome.status, outcome.error = e.code().name, e.details() or ""
            except aiohttp.ServerDisconnectedError as e:
                outcome.error = f"{type(e).__name__}: {e}"
                # The keep-alive race: the server closed an idle pooled connection as the request
                # went out, so no answer came and nothing ran. Retried once, as HTTP clients do.
                if attempt == 0 and outcome.status == 0:
                    outcome.retries += 1
                    continue
            except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as e:
                outcome.error = f"{type(e).__name__}: {e}"
            break
        outcome.e2e_s = time.perf_counter() - start
        return outcome

    async def _rest(self, call: Call, out: Outcome, start: float) -> None:
        body = {
            "model": call.model,
            "prompt": call.prompt,
            "stream": call.stream,
            "params": {
                "max_tokens": call.max_tokens,
                "ignore_eos": True,
                "temperature": call.temperature,
                "seed": call.seed,
            },
        }
        if not call.stream:
            async with self.http.post("/v1/generate", json=body) as response:
                out.status = response.status
                out.retry_after = response.headers.get("retry-after")
                if response.status == 200:
                    (comp,) = (await response.json())["completions"]
                    out.tokens = len(comp["token_ids"])
                    finished = comp["finish_reason"] in COMPLETE_FINISHES
                    out.complete = finished and out.tokens == call.max_tokens
                else:
                    await response.read()
            return
        finish, done, last = None, False, start
        async with self.http.post("/v1/generate", json=body) as response:
            out.status = response.status
            out.retry_after = response.headers.get("retry-after")
            if response.status != 200:
                await response.read()
                return
            async for line in response.content:  # one SSE line at a time, however the server chunked them
                if not line.startswith(b"data: "):
                    continue
                if line.startswith(b"data: [DONE]"):
                    done = True
                    continue
                # Only the finish message is parsed: a token message is counted as it comes, which
                # keeps this client's CPU (it shares the cores with the server) per token small.
                if b'"finish_reason"' in line:
                    finish = json.loads(line[6:])["finish_reason"]
                elif b'"token_ids"' in line:
                    last = self._tokens(out, start, last, count_token_ids(line))
                    if call.hang_up_after is not None and out.tokens >= call.hang_up_after:
                        out.status = "hung_up"
                        return  # leaving the `async with` unread closes the connection mid-stream
        out.complete = done and finish in COMPLETE_FINISHES and out.tokens == call.max_tokens

    async def _openai(self, call: Call, out: Outcome, start: float) -> None:
        body = {
            "model": call.model,
            "prompt": call.prompt,
            "stream": call.stream,
            "max_tokens": call.max_tokens,
            "ignore_eos": True,
            "temperature": call.temperature,
            "seed": call.seed,
        }
        async with self.http.post("/v1/completions", json=body) as response:
            out.status = response.status
            out.retry_after = response.headers.get("retry-after")
            if response.status != 200:
                await response.read()
                return
            if not call.stream:
                answer = await response.json()
                (choice,) = answer["choices"]
                out.tokens = answer["usage"]["completion_tokens"]
                finished = choice["finish_reason"] in COMPLETE_FINISHES
                out.complete = finished and out.tokens == call.max_tokens
                return
            finish, done, last = None, False, start
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                if line.startswith(b"data: [DONE]"):
                    done = True
                elif b'"finish_reason":null' in line:  # one chunk per token (the finish has its own)
                    last = self._tokens(out, start, last, 1)
                    if call.hang_up_after is not None and out.tokens >= call.hang_up_after:
                        out.status = "hung_up"
                        return
                elif b'"finish_reason"' in line:
                    finish = json.loads(line[6:])["choices"][0]["finish_reason"]
        out.complete = done and finish in COMPLETE_FINISHES and out.tokens == call.max_tokens

    async def _grpc(self, call: Call, out: Outcome, start: float) -> None:
        params = pb.SamplingParams(
            max_tokens=call.max_tokens, ignore_eos=True, temperature=call.temperature, seed=call.seed
        )
        request = pb.GenerateRequest(model=call.model, prompt=call.prompt, params=params)
        if not call.stream:
            reply = await self.stub.Generate(request, timeout=self.timeout_s)
            out.status = "OK"
            (comp,) = reply.completions
            out.tokens = len(comp.token_ids)
            out.complete = comp.finish_reason in GRPC_FINISH and out.tokens == call.max_tokens
            return
        finish, last = None, start
        stream = self.stub.GenerateStream(request, timeout=self.timeout_s)
        async for message in stream:
            if message.finish_reason:
                finish = message.finish_reason
            elif message.token_ids:
                last = self._tokens(out, start, last, len(message.token_ids))
                if call.hang_up_after is not None and out.tokens >= call.hang_up_after:
                    stream.cancel()
                    out.status = "hung_up"
                    return
        out.status = "OK"
        out.complete = finish in GRPC_FINISH and out.tokens == call.max_tokens

    def _tokens(self, out: Outcome, start: float, last: float, count: int) -> float:
        """Record `count` tokens that arrived in one message (the server merges a backlog)."""
        now = time.perf_counter()
        if out.ttft_s is None:
            out.ttft_s = now - start
            if self.on_first_token is not None:
                self.on_first_token()
        else:
            out.gaps_s.append(now - last)
        out.gaps_s.extend([0.0] * (count - 1))  # tokens that came together came with no gap
        out.tokens += count
        return now


def count_token_ids(line: bytes) -> int:
    """How many ids a streamed message's `"token_ids":[...]` holds, without parsing the JSON."""
    start = line.index(b'"token_ids":[') + len(b'"token_ids":[')
    end = line.index(b"]", start)
    return line.count(b",", start, end) + 1 if end > start else 0


async def drive(clients: Clients, calls: Sequence[Call], concurrency: int) -> list[Outcome]:
    """Run every call with at most `concurrency` in flight (a closed loop of workers); keeps order."""
    outcomes: list[Outcome | None] = [None] * len(calls)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(calls):
            i = next_index
            next_index += 1
            outcomes[i] = await clients.run(calls[i])

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [o for o in outcomes if o is not None]


def mixed_calls(count: int, model: str, max_tokens: int, prompt: str = "To be, or not") -> list[Call]:
    """`count` calls cycling through REST/gRPC x unary/stream, so every quarter of a run has the mix."""
    kinds: list[tuple[Protocol, bool]] = [("rest", False), ("rest", True), ("grpc", False), ("grpc", True)]
    return [Call(*kinds[i % 4], model, prompt, max_tokens) for i in range(count)]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def arrive(clients: Clients, calls: Sequence[Call], rate_per_s: float) -> list[Outcome]:
    """Open loop: start one call every 1/rate seconds whatever the answers, then await them all.

    The sleep paces arrivals (there is no event to await); it keeps one client process from timing
    its own dispatch backlog instead of the server's answer."""
    tasks = []
    for call in calls:
        tasks.append(asyncio.create_task(clients.run(call)))
        await asyncio.sleep(1.0 / rate_per_s)
    return list(await asyncio.gather(*tasks))
