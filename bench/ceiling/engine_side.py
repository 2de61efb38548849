"""The in-process engine: `load_generation_model` with the server's own settings, driven by asyncio
callers in this process. Its CPU time is this whole process's (all threads), as the server's is."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from bench.ceiling.measure import Round
from bench.ceiling.workload import Workload
from harness.procstat import cpu_seconds
from service.engine import GenerationRequest, QueueFullError, TokenEvent, load_generation_model
from service.settings import Settings


class InProcessEngine:
    def __init__(self, model_dir: Path, settings: Settings) -> None:
        self.engine = load_generation_model(model_dir, settings)
        self.engine.start()

    def fit(self, workload: Workload) -> int:
        """The workload's token count, cut to what the model's context leaves after the prompt."""
        max_len = self.engine.runner.max_len
        if max_len is None:  # recurrent: no context limit
            return workload.tokens
        prompt = self.engine.encode(workload.engine_request(stream=False))
        return max(1, min(workload.tokens, max_len - len(prompt)))

    def close(self) -> None:
        asyncio.run(self.engine.stop(5))

    def round(self, workload: Workload, streams: int, requests: int, stream: bool, tokens: int) -> Round:
        """`requests` requests, at most `streams` at a time (a closed loop, as the load generator)."""
        return asyncio.run(self._round(workload, streams, requests, stream, tokens))

    async def _round(
        self, workload: Workload, streams: int, requests: int, stream: bool, tokens: int
    ) -> Round:
        pid = os.getpid()
        result = Round(0.0, 0.0, requests)
        left = iter(range(requests))

        async def caller() -> None:
            for _ in left:
                await self._one(workload.engine_request(stream, tokens), result)

        start, cpu_start = time.perf_counter(), cpu_seconds(pid)
        await asyncio.wait_for(asyncio.gather(*(caller() for _ in range(streams))), 1800.0)
        result.seconds, result.cpu_s = time.perf_counter() - start, cpu_seconds(pid) - cpu_start
        return result

    async def _one(self, request: GenerationRequest, result: Round) -> None:
        start = time.perf_counter()
        try:
            handle = self.engine.submit(request)
        except QueueFullError:
            result.refused += 1
            return
        count, last, first = 0, start, None
        if request.stream:
            async for batch in handle.batches():
                now = time.perf_counter()
                got = sum(isinstance(event, TokenEvent) for event in batch)
                if not got:
                    continue
                if first is None:
                    first = now - start
                else:
                    result.gaps_s.append(now - last)
                result.gaps_s.extend([0.0] * (got - 1))  # tokens that came together came with no gap
                count, last = count + got, now
        else:
            count = (await handle.result()).usage.completion_tokens
        if first is not None:
            result.ttft_s.append(first)
        result.latency_s.append(time.perf_counter() - start)
        result.tokens += count
        result.incomplete += count != request.params.max_new_tokens
