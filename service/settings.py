"""Service configuration from `SEQSERVE_*` environment variables, validated once at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service; the engine, the API and `python -m service` read the same object."""

    model_config = SettingsConfigDict(env_prefix="SEQSERVE_", env_file=None, extra="ignore")

    models_dir: Path = Path("exported_models")
    http_host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=0, le=65535)
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(50051, ge=0, le=65535)
    provider: Literal["cpu", "cuda"] = "cpu"
    # 0 = auto: the usable cores less one for the event loop, at least 1 (service/engine/capacity.py).
    intra_op_threads: int = Field(0, ge=0)
    # ORT's intra-op threads busy-wait between runs unless told not to: off, so that a lightly loaded
    # server does not burn the cores its event loop needs (docs/api.md has both measured).
    allow_spinning: bool = False
    # None = auto: as many slots as `kv_cache_mb` of cache or state holds, at most 64 on CPU and
    # 256 on CUDA (service/engine/capacity.py).
    max_slots: int | None = Field(None, ge=1, le=1024)
    kv_cache_mb: int = Field(1024, ge=1)
    max_queue: int = Field(64, ge=0)
    # None means: up to the model's context length (minus room for at least one new token).
    max_prompt_tokens: int | None = Field(None, ge=1)
    # Recurrent models have no context to bound a prompt: without max_prompt_tokens, this does
    # (a prompt is prefilled at a few thousand tokens a second on 2 cores; 1 MB of text would be 560k).
    recurrent_max_prompt_tokens: int = Field(32768, ge=1)
    max_new_tokens: int = Field(512, ge=1)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    classifier_max_batch: int = Field(32, ge=1)
    classifier_max_delay_ms: float = Field(5.0, ge=0.0)
    api_key: str | None = None
    log_format: Literal["text", "json"] = "text"
    drain_timeout_s: float = Field(25.0, ge=0.0)
    default_generate_model: str | None = None
    default_classify_model: str | None = None
    # Readiness policy: by default a model refused at load (bad hashes, broken manifest) is reported
    # not ready but does not hold back /readyz; True makes any failed model fail /readyz.
    require_all_models: bool = False
    # Texts in one classify request (the classifier batches them with other callers').
    max_texts_per_request: int = Field(256, ge=1)
    # A long text becomes windows (the model's preprocessing); past these, 413 naming the field.
    classifier_max_windows_per_text: int = Field(64, ge=1)
    classifier_max_tokens_per_request: int = Field(65536, ge=1)
    # Seconds a client is told to wait (Retry-After) when the queue is full.
    retry_after_s: int = Field(1, ge=0)
    # Seconds a request may wait in the queue before it starts; past that it gets 503 + Retry-After
    # (gRPC DEADLINE_EXCEEDED) and leaves the queue. 0: no limit. A request's `timeout` may ask for less.
    max_queue_time_s: float = Field(30.0, ge=0.0)
    # Engine tuning: prompt tokens prefilled per scheduler iteration (bounds the stall of running streams).
    prefill_chunk_tokens: int = Field(64, ge=16)
    # Structured outputs: the longest schema, regex, choice list or grammar text (characters), the
    # longest a constraint may take to compile, and how many compiled grammars each model keeps.
    max_constraint_chars: int = Field(65536, ge=64)
    constraint_compile_timeout_s: float = Field(5.0, gt=0.0)
    grammar_cache_size: int = Field(256, ge=1)
    # How often (ms) the interpreter may hand the GIL from the scheduler thread to the event loop.
    # Python's 5 ms let a refused request wait behind the sampler; 0.5 ms halved the 429 latency of a
    # 1,000-request burst at a full server and left the CPU per streamed token unchanged.
    gil_switch_interval_ms: float = Field(0.5, gt=0.0, le=100.0)
    # Warm-up runs the shapes requests will use, so that no first request pays for them.
    warmup: bool = True
    # Full server processes sharing the HTTP and gRPC ports (SO_REUSEPORT), started and supervised
    # by `python -m service` (service/supervisor.py). 1: one process and no supervisor, as before.
    workers: int = Field(1, ge=1, le=256)


def load_settings() -> Settings:
    """Read the environment now (not at import) so tests and `python -m service` can set variables first."""
    return Settings()
