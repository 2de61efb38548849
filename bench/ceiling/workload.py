"""One workload for both sides: the same prompt, sampling parameters and token count go to the
in-process engine and, through the load generator, to every protocol of the service."""

from __future__ import annotations

from dataclasses import dataclass

from harness.loadgen import Call, Protocol
from service.engine import GenerationRequest, SamplingParams

# name -> (load generator protocol, streamed): what `--protocols` accepts.
PROTOCOLS: dict[str, tuple[Protocol, bool]] = {
    "rest_sse": ("rest", True),  # native /v1/generate, SSE
    "openai_sse": ("openai", True),  # /v1/completions, SSE
    "rest_unary": ("rest", False),  # native /v1/generate, one JSON answer
    "grpc_stream": ("grpc", True),  # GenerateStream
}
# The unary one-token requests-per-second rows.
RPS_PROTOCOLS: dict[str, Protocol] = {"rest_unary": "rest", "openai_unary": "openai", "grpc_unary": "grpc"}


@dataclass(frozen=True)
class Workload:
    """Sampled (not greedy: the service's users sample) generation of exactly `tokens` tokens."""

    prompt: str = "KING:\n"
    tokens: int = 256
    temperature: float = 0.8
    seed: int = 1

    def call(self, protocol: Protocol, stream: bool, model: str, tokens: int | None = None) -> Call:
        return Call(
            protocol,
            stream,
            model,
            self.prompt,
            self.tokens if tokens is None else tokens,
            temperature=self.temperature,
            seed=self.seed,
        )

    def engine_request(self, stream: bool, tokens: int | None = None) -> GenerationRequest:
        params = SamplingParams(
            max_new_tokens=self.tokens if tokens is None else tokens,
            temperature=self.temperature,
            seed=self.seed,
            ignore_eos=True,
        )
        return GenerationRequest(prompt=self.prompt, params=params, stream=stream)
