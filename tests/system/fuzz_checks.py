"""schemathesis hooks for the REST fuzz (loaded from this file through SCHEMATHESIS_HOOKS).

`not_a_server_fault` is `not_a_server_error` with one documented exception: a request whose own
`timeout` (seconds it may wait in the queue) ran out before it started gets 503 + Retry-After, the
answer docs/api.md gives for it. The fuzzer sends timeouts such as 5e-324 s, which run out before the
scheduler's next step even on an idle server. Every other 5xx still fails the run.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis

# The engine's message for a request that left the queue unstarted (service/engine/engine.py).
QUEUE_TIMEOUT_MARK = "in the queue of"


def is_queue_timeout(status: int, headers: Any, body: bytes) -> bool:
    if status != 503 or "retry-after" not in {k.lower() for k in headers}:
        return False
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(message, str) and QUEUE_TIMEOUT_MARK in message and "without starting" in message


@schemathesis.check
def not_a_server_fault(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code < 500 or is_queue_timeout(
        response.status_code, response.headers, response.content
    ):
        return None
    raise AssertionError(f"server error {response.status_code}: {response.content[:300]!r}")
