"""GET /metrics: vLLM-style `seqserve_` families that move with traffic and pass `promtool check metrics`."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest

from tests.api.conftest import CLF_MODEL, GEN_MODEL
from tests.api.metrics_reader import sample
from tests.fixtures.tiny_models import tiny_prompt

FAMILIES = [
    "seqserve_requests_total",
    "seqserve_e2e_request_latency_seconds_bucket",
    "seqserve_time_to_first_token_seconds_bucket",
    "seqserve_inter_token_latency_seconds_bucket",
    "seqserve_request_queue_time_seconds_bucket",
    "seqserve_prompt_tokens_total",
    "seqserve_generation_tokens_total",
    "seqserve_batch_size_bucket",
    "seqserve_num_requests_running",
    "seqserve_num_requests_waiting",
    "seqserve_kv_slots_used",
    "seqserve_kv_slots_capacity",
    "seqserve_kv_slots_usage_ratio",
    "seqserve_classifier_batch_size_bucket",
    "seqserve_classifier_latency_seconds_bucket",
    "seqserve_model_ready",
    "seqserve_api_requests_in_flight",
    "seqserve_api_request_duration_seconds_bucket",
    "seqserve_server_draining",
]


def test_metrics_pass_promtool_check(http: httpx.Client) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    http.post("/v1/completions", json={"model": GEN_MODEL, "prompt": "To be", "max_tokens": 4})
    http.post("/v1/sentiment", json={"texts": ["fine"]})
    text = http.get("/metrics").text
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_documented_family_is_exposed(http: httpx.Client) -> None:
    http.post("/v1/completions", json={"model": GEN_MODEL, "prompt": "To be", "max_tokens": 4})
    http.post("/v1/sentiment", json={"texts": ["fine"]})
    text = http.get("/metrics").text
    missing = [name for name in FAMILIES if f"\n{name}" not in text]
    assert not missing


def test_a_completion_moves_the_request_and_token_counters(http: httpx.Client) -> None:
    labels = {"route": "/v1/completions", "model": GEN_MODEL, "status": "200"}
    before = {
        "requests": sample(http, "seqserve_requests_total", **labels) or 0,
        "prompt": sample(http, "seqserve_prompt_tokens_total", model=GEN_MODEL) or 0,
        "generated": sample(http, "seqserve_generation_tokens_total", model=GEN_MODEL) or 0,
        "ttft": sample(http, "seqserve_time_to_first_token_seconds_count", model=GEN_MODEL) or 0,
    }
    body = {"model": GEN_MODEL, "prompt": "To be", "max_tokens": 5, "temperature": 0, "ignore_eos": True}
    assert http.post("/v1/completions", json=body).status_code == 200
    assert sample(http, "seqserve_requests_total", **labels) == before["requests"] + 1
    assert sample(http, "seqserve_prompt_tokens_total", model=GEN_MODEL) == before["prompt"] + len(
        tiny_prompt("To be")
    )
    assert sample(http, "seqserve_generation_tokens_total", model=GEN_MODEL) == before["generated"] + 5
    assert sample(http, "seqserve_time_to_first_token_seconds_count", model=GEN_MODEL) == before["ttft"] + 1
    assert sample(http, "seqserve_kv_slots_capacity", model=GEN_MODEL) == 4
    assert sample(http, "seqserve_model_ready", model=GEN_MODEL) == 1


def test_classification_moves_the_classifier_histograms(http: httpx.Client) -> None:
    before = sample(http, "seqserve_classifier_latency_seconds_count", model=CLF_MODEL) or 0
    http.post("/v1/sentiment", json={"texts": ["one", "two", "three"]})
    assert sample(http, "seqserve_classifier_latency_seconds_count", model=CLF_MODEL) == before + 3
    assert (sample(http, "seqserve_classifier_batch_size_count", model=CLF_MODEL) or 0) >= 1
