"""Every Prometheus metric of the service, defined once (vLLM-style names, `seqserve_` prefix).

The metrics live in their own registry so `/metrics` exposes exactly these plus process metrics,
and tests can read values with `REGISTRY.get_sample_value(...)`.

With SEQSERVE_WORKERS > 1 the supervisor sets PROMETHEUS_MULTIPROC_DIR, so prometheus-client
keeps every worker's values in files there and `/metrics` in any worker serves their aggregate
(`SCRAPE_REGISTRY`). Counters and histograms add up; each gauge says how its per-worker values
combine (`multiprocess_mode`, ignored in a single process); the `live` modes forget a worker once
the supervisor reaps it.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.multiprocess import MultiProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TOKEN_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256)

REQUESTS_TOTAL = Counter(
    "seqserve_requests_total",
    "Finished requests by route, model and HTTP-style status.",
    ("route", "model", "status"),
    registry=REGISTRY,
)
E2E_LATENCY = Histogram(
    "seqserve_e2e_request_latency_seconds",
    "Submission to last event of a generation request.",
    ("model",),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "seqserve_time_to_first_token_seconds",
    "Submission to first generated token.",
    ("model",),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
INTER_TOKEN_LATENCY = Histogram(
    "seqserve_inter_token_latency_seconds",
    "Time between consecutive tokens of one request.",
    ("model",),
    buckets=_TOKEN_LATENCY_BUCKETS,
    registry=REGISTRY,
)
QUEUE_TIME = Histogram(
    "seqserve_request_queue_time_seconds",
    "Submission to admission into a KV slot.",
    ("model",),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
PROMPT_TOKENS = Counter(
    "seqserve_prompt_tokens_total", "Prompt tokens prefilled.", ("model",), registry=REGISTRY
)
GENERATION_TOKENS = Counter(
    "seqserve_generation_tokens_total", "Tokens generated.", ("model",), registry=REGISTRY
)
BATCH_SIZE = Histogram(
    "seqserve_batch_size", "Rows in each decode step.", ("model",), buckets=_BATCH_BUCKETS, registry=REGISTRY
)
# Gauges across workers (multiprocess_mode): counts and capacities add up (livesum); the usage ratio
# is the busiest worker's (livemax), since a connection stays with its worker and a full worker
# queues and refuses while another has room (the pod's own ratio is used / capacity); a model is
# ready only when every worker has it ready (livemin), so one worker's failed load still alerts.
REQUESTS_RUNNING = Gauge(
    "seqserve_num_requests_running",
    "Requests holding a slot.",
    ("model",),
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
REQUESTS_WAITING = Gauge(
    "seqserve_num_requests_waiting",
    "Requests queued for a slot.",
    ("model",),
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
KV_SLOTS_USED = Gauge(
    "seqserve_kv_slots_used",
    "Cache/state slots in use.",
    ("model",),
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
# Not "_total": promtool rejects that suffix on anything but a counter.
KV_SLOTS_TOTAL = Gauge(
    "seqserve_kv_slots_capacity",
    "Cache/state slots allocated.",
    ("model",),
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
KV_SLOTS_USAGE = Gauge(
    "seqserve_kv_slots_usage_ratio",
    "Fraction of slots in use (0..1).",
    ("model",),
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
CLASSIFIER_BATCH_SIZE = Histogram(
    "seqserve_classifier_batch_size",
    "Texts in each classifier run.",
    ("model",),
    buckets=_BATCH_BUCKETS,
    registry=REGISTRY,
)
CLASSIFIER_LATENCY = Histogram(
    "seqserve_classifier_latency_seconds",
    "Enqueue to result of one classified text.",
    ("model",),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
MODEL_READY = Gauge(
    "seqserve_model_ready",
    "1 when the model is loaded and warmed, else 0.",
    ("model",),
    registry=REGISTRY,
    multiprocess_mode="livemin",
)

API_REQUESTS_IN_FLIGHT = Gauge(
    "seqserve_api_requests_in_flight",
    "API requests (REST or gRPC) being served, by route.",
    ("route",),
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
API_REQUEST_LATENCY = Histogram(
    "seqserve_api_request_duration_seconds",
    "Arrival to the last byte of an API request, by route (generation, classification, listing).",
    ("route",),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
GRAMMAR_CACHE = Counter(
    "seqserve_grammar_cache_total",
    "Structured-output constraints looked up in the compiled-grammar cache, by result (hit or miss).",
    ("model", "result"),
    registry=REGISTRY,
)
GRAMMAR_COMPILE_TIME = Histogram(
    "seqserve_grammar_compile_seconds",
    "Time to compile one structured-output constraint (cache misses only).",
    ("model",),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
SERVER_DRAINING = Gauge(
    "seqserve_server_draining",
    "1 once SIGTERM was received and the server drains.",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)


class ModelMetrics:
    """The per-model children, resolved once: `labels()` costs microseconds and runs on every token."""

    def __init__(self, model: str) -> None:
        self.queue_time = QUEUE_TIME.labels(model=model)
        self.prompt_tokens = PROMPT_TOKENS.labels(model=model)
        self.generation_tokens = GENERATION_TOKENS.labels(model=model)
        self.batch_size = BATCH_SIZE.labels(model=model)
        self.time_to_first_token = TIME_TO_FIRST_TOKEN.labels(model=model)
        self.inter_token_latency = INTER_TOKEN_LATENCY.labels(model=model)
        self.e2e_latency = E2E_LATENCY.labels(model=model)
        self.running = REQUESTS_RUNNING.labels(model=model)
        self.waiting = REQUESTS_WAITING.labels(model=model)
        self.slots_used = KV_SLOTS_USED.labels(model=model)
        self.slots_total = KV_SLOTS_TOTAL.labels(model=model)
        self.slots_usage = KV_SLOTS_USAGE.labels(model=model)


def _scrape_registry() -> CollectorRegistry:
    """What `/metrics` serves: this process's registry, or with PROMETHEUS_MULTIPROC_DIR set, the
    aggregate of every worker's files. process_* are left out then: each scrape lands on one worker,
    so they would alternate between processes (the container's CPU and memory metrics cover the pod).
    """
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    aggregate = CollectorRegistry()
    MultiProcessCollector(aggregate)
    PlatformCollector(registry=aggregate)
    return aggregate


SCRAPE_REGISTRY = _scrape_registry()
