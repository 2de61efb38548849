"""Reading the server's /metrics as a client (Prometheus text format), for tests and benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families


def sample(client: httpx.Client, name: str, **labels: str) -> float | None:
    """The value of one sample (e.g. seqserve_kv_slots_used{model=...}), or None if absent."""
    return samples(client, [name], **labels)[name]


def samples(client: httpx.Client, names: list[str], **labels: str) -> dict[str, float | None]:
    """Several samples from one scrape, so that they are consistent with each other."""
    found: dict[str, float | None] = dict.fromkeys(names)
    text = client.get("/metrics", timeout=10.0).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in found and all(s.labels.get(k) == v for k, v in labels.items()):
                found[s.name] = s.value
    return found


@dataclass(frozen=True)
class Histogram:
    """A histogram's observation count and sum of one label set; `-` gives what happened between."""

    count: float
    sum: float

    def __sub__(self, earlier: Histogram) -> Histogram:
        return Histogram(self.count - earlier.count, self.sum - earlier.sum)


def histograms(client: httpx.Client, names: list[str], **labels: str) -> dict[str, Histogram]:
    """`name` -> Histogram for each histogram family name (without _count/_sum), from one scrape."""
    keys = [f"{n}{suffix}" for n in names for suffix in ("_count", "_sum")]
    got = samples(client, keys, **labels)
    return {n: Histogram(got[f"{n}_count"] or 0.0, got[f"{n}_sum"] or 0.0) for n in names}


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
