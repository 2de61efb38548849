"""Reading Server-Sent Events as a client: `data:` lines of JSON, ending with `data: [DONE]`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx


def events(response: httpx.Response) -> Iterator[dict[str, Any] | str]:
    """Each `data:` payload, decoded (the final "[DONE]" stays a string)."""
    for line in response.iter_lines():
        if not line.startswith("data: "):
            continue
        payload = line[len("data: ") :]
        yield payload if payload == "[DONE]" else json.loads(payload)


def collect(
    client: httpx.Client, path: str, body: dict[str, Any], **kwargs: Any
) -> list[dict[str, Any] | str]:
    with client.stream("POST", path, json=body, **kwargs) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(events(response))
