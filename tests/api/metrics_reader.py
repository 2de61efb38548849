"""Reading the server's /metrics as a client (Prometheus text format) in tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families


def sample(client: httpx.Client, name: str, **labels: str) -> float | None:
    """The value of one sample (e.g. seqserve_kv_slots_used{model=...}), or None if absent."""
    text = client.get("/metrics", timeout=10.0).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def wait_for(
    client: httpx.Client,
    name: str,
    predicate: Callable[[float | None], bool],
    timeout: float = 30.0,
    **labels: str,
) -> float | None:
    """Poll a metric until `predicate(value)` holds; the server exposes no event to await instead."""
    deadline = time.monotonic() + timeout
    value = sample(client, name, **labels)
    while not predicate(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}{labels} = {value} did not reach the expected value in {timeout}s")
        time.sleep(0.05)
        value = sample(client, name, **labels)
    return value
