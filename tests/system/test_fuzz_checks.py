"""The fuzz's server-fault check lets through only the documented queue-timeout 503."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tests.system.fuzz_checks import not_a_server_fault


def response(status: int, message: str, headers: dict[str, str] | None = None) -> SimpleNamespace:
    body = json.dumps({"error": {"message": message, "type": "service_unavailable"}}).encode()
    return SimpleNamespace(status_code=status, headers=headers or {}, content=body)


QUEUE_TIMEOUT = "waited 5e-324 s in the queue of 'tiny-llama' without starting; retry later"


def test_only_a_queue_timeout_503_with_retry_after_passes() -> None:
    assert not_a_server_fault(None, response(503, QUEUE_TIMEOUT, {"Retry-After": "1"}), None) is None
    assert not_a_server_fault(None, response(400, "temperature: bad"), None) is None
    for status, message, headers in [
        (503, QUEUE_TIMEOUT, {}),  # no Retry-After
        (503, "the server is shutting down", {"retry-after": "1"}),
        (500, QUEUE_TIMEOUT, {"retry-after": "1"}),
    ]:
        with pytest.raises(AssertionError):
            not_a_server_fault(None, response(status, message, headers), None)
