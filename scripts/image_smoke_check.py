"""Check a running seqserve container over HTTP: ready, one generation, one sentiment call, metrics.

Used by scripts/image_smoke.sh. The HTTP checks need the standard library only, so any python3
on the host can run them. The gRPC health check needs grpcio-health-checking: a python without it
fails that check rather than skipping it, and image_smoke.sh then runs it (`grpc`) with the image's
own python inside the container, which has it. Exits non-zero with a one-line reason on the first
failed check.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

GENERATE_PROMPT = "ROMEO:"
SENTIMENT_TEXT = "A warm, funny and beautifully acted film."


class SmokeFailure(Exception):
    """A check that did not hold; its message is the report line."""


def _request(
    base_url: str, path: str, body: dict[str, Any] | None = None, timeout_s: float = 60.0
) -> tuple[int, bytes]:
    """One HTTP call; returns (status, body) for any status instead of raising on 4xx/5xx."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base_url + path, data=data, method="GET" if body is None else "POST")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def is_ready(base_url: str) -> bool:
    """One /readyz probe: the shell script polls it while also watching that the container still runs."""
    try:
        status, _ = _request(base_url, "/readyz", timeout_s=3.0)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
    return status == 200


def _model_for(models: list[dict[str, Any]], task: str) -> dict[str, Any]:
    """The ready model of a task that the service uses by default, else the first ready one."""
    candidates = [m for m in models if m.get("task") == task and m.get("ready")]
    if not candidates:
        raise SmokeFailure(f"no ready {task} model in /v1/models: {models!r}")
    return next((m for m in candidates if m.get("default")), candidates[0])


def _json(status: int, body: bytes, what: str) -> Any:
    if status != 200:
        raise SmokeFailure(f"{what}: HTTP {status}: {body[:300]!r}")
    try:
        return json.loads(body)
    except json.JSONDecodeError as error:
        raise SmokeFailure(f"{what}: not JSON ({error}): {body[:300]!r}") from error


def check_service(base_url: str) -> list[str]:
    """Run the calls a deployment must answer; returns one report line per check."""
    report = []
    models = _json(*_request(base_url, "/v1/models"), "GET /v1/models")["data"]
    report.append(f"GET /v1/models: {[(m['id'], m.get('task')) for m in models]}")

    generator = _model_for(models, "generate")
    completion_request = {
        "model": generator["id"],
        "prompt": GENERATE_PROMPT,
        "max_tokens": 8,
        "temperature": 0,
    }
    completion = _json(*_request(base_url, "/v1/completions", completion_request), "POST /v1/completions")
    text = completion["choices"][0]["text"]
    if not isinstance(text, str) or not text:
        raise SmokeFailure(f"POST /v1/completions returned no text: {completion!r}")
    report.append(f"POST /v1/completions ({generator['id']}): {text!r}")

    classifier = _model_for(models, "classify")
    sentiment_request = {"model": classifier["id"], "texts": [SENTIMENT_TEXT]}
    sentiment = _json(*_request(base_url, "/v1/sentiment", sentiment_request), "POST /v1/sentiment")
    label = sentiment["results"][0]["label"]
    if classifier.get("labels") and label not in classifier["labels"]:
        raise SmokeFailure(f"POST /v1/sentiment: label {label!r} not one of {classifier['labels']}")
    report.append(f"POST /v1/sentiment ({classifier['id']}): {label!r}")

    status, metrics = _request(base_url, "/metrics")
    if status != 200 or b"seqserve_requests_total" not in metrics:
        raise SmokeFailure(f"GET /metrics: HTTP {status}, seqserve_requests_total missing")
    report.append("GET /metrics: seqserve_requests_total present")
    return report


def check_grpc_health(target: str) -> str:
    """grpc.health.v1 Check for the whole server (""): what the Kubernetes startupProbe asks."""
    try:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc
    except ImportError as error:
        raise SmokeFailure(
            f"gRPC health on {target} cannot be checked: {error.name} is not importable by {sys.executable}"
        ) from error
    with grpc.insecure_channel(target) as channel:
        request = health_pb2.HealthCheckRequest(service="")
        response = health_pb2_grpc.HealthStub(channel).Check(request, timeout=10)
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        raise SmokeFailure(
            f"gRPC health on {target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}"
        )
    return f"gRPC health on {target}: SERVING"


def main(argv: list[str] | None = None) -> int:
    """CLI: `ready|calls --base-url URL [--grpc-target H:P]`, or `grpc --grpc-target H:P`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "check",
        choices=("ready", "calls", "grpc"),
        help="ready: one /readyz probe; calls: the API (+ gRPC health with --grpc-target); grpc: gRPC health",
    )
    parser.add_argument("--base-url", help="http://host:port (ready and calls)")
    parser.add_argument("--grpc-target", help="host:port for the gRPC health check")
    args = parser.parse_args(argv)
    if args.check in ("ready", "calls") and not args.base_url:
        parser.error(f"{args.check} needs --base-url")
    if args.check == "grpc" and not args.grpc_target:
        parser.error("grpc needs --grpc-target")
    if args.check == "ready":
        return 0 if is_ready(args.base_url) else 1
    try:
        if args.check == "calls":
            for line in check_service(args.base_url):
                print(line)
        if args.grpc_target:
            print(check_grpc_health(args.grpc_target))
    except (SmokeFailure, KeyError, IndexError, TypeError, urllib.error.URLError) as error:
        print(f"SMOKE FAILED: {error!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
