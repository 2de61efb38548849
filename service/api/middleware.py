"""Pure ASGI middleware (no BaseHTTPMiddleware, which would buffer streams and hide disconnects):
the request id, the API key check and the request body limit, all before any route runs."""

from __future__ import annotations

import hmac
import json
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import ApiError, ErrorKind, invalid
from service.api.schemas import REQUEST_ID_PATTERN

# Probes and scrapes must work without the key: kubelets and Prometheus do not hold it. The API's
# description stays public too: it holds no data and no model state (those routes need the key),
# and it is how a client or a person finds out what to send, including that a key is needed.
OPEN_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        "/v2/health/live",
        "/v2/health/ready",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
    }
)


async def send_error(
    send: Send, error: ApiError, headers: dict[str, str] | None = None, *, path: str = ""
) -> None:
    """The error in the shape of the protocol that `path` belongs to (OpenAI's, or `/v2`'s)."""
    body = json.dumps(error.body_for(path)).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": error.kind.http_status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class RequestIdMiddleware:
    """Every HTTP response carries `X-Request-Id`: the client's header, or a new id. The id is kept in
    the request's state (`request_id`), where the routes read it for their log line and a body's
    `request_id` may replace it before the response starts. A header that could not be echoed as a
    header value (or would flood the log) is refused as a bad field, before anything else runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        state["request_id"] = given if given and re.fullmatch(REQUEST_ID_PATTERN, given) else uuid.uuid4().hex

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", state["request_id"].encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        if given and given != state["request_id"]:
            error = invalid("x-request-id", "must be at most 128 visible ASCII characters (no spaces)")
            await send_error(send_with_id, error, path=scope["path"])
            return
        await self.app(scope, receive, send_with_id)


def key_matches(header_value: str | None, api_key: str) -> bool:
    """`Bearer <key>`, compared in constant time; shared with the gRPC adapter."""
    if not header_value:
        return False
    scheme, _, token = header_value.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


class ApiKeyMiddleware:
    """With an API key configured, every route but the probes needs `Authorization: Bearer <key>`."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        value = headers.get(b"authorization")
        if not key_matches(value.decode("latin-1") if value else None, self.api_key):
            error = ApiError(
                ErrorKind.UNAUTHENTICATED, "missing or invalid API key (Authorization: Bearer <key>)"
            )
            await send_error(send, error, {"www-authenticate": "Bearer"}, path=scope["path"])
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Reads the whole body up front (it is bounded) and answers 413 past the limit, then replays it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        too_large = ApiError(
            ErrorKind.PAYLOAD_TOO_LARGE, f"body: larger than the limit of {self.max_bytes} bytes", "body"
        )
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await send_error(send, too_large, {"connection": "close"}, path=scope["path"])
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_error(send, too_large, {"connection": "close"}, path=scope["path"])
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: waits for the disconnect, as the server's would

        await self.app(scope, replay, send)


class WorkerHeaderMiddleware:
    """With SEQSERVE_WORKERS > 1: `x-seqserve-worker: <index>` on every response, so an operator (and
    the tests) can tell which of the processes sharing the port served a connection."""

    def __init__(self, app: ASGIApp, worker_index: int) -> None:
        self.app = app
        self.header = (b"x-seqserve-worker", str(worker_index).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_header)
