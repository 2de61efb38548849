"""One error type for both adapters: REST turns it into a status and a JSON body, gRPC into a status code.

Every client mistake becomes a 4xx that names the offending field; only real server faults are 500.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum

import grpc
from pydantic import ValidationError

from service.engine import EngineStoppedError, InvalidRequestError, QueueFullError


class ErrorKind(Enum):
    """(HTTP status, gRPC code, OpenAI-style error type) of each failure class."""

    INVALID_ARGUMENT = (400, grpc.StatusCode.INVALID_ARGUMENT, "invalid_request_error")
    UNAUTHENTICATED = (401, grpc.StatusCode.UNAUTHENTICATED, "authentication_error")
    NOT_FOUND = (404, grpc.StatusCode.NOT_FOUND, "not_found_error")
    PAYLOAD_TOO_LARGE = (413, grpc.StatusCode.RESOURCE_EXHAUSTED, "invalid_request_error")
    RESOURCE_EXHAUSTED = (429, grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limit_error")
    CANCELLED = (499, grpc.StatusCode.CANCELLED, "cancelled")
    INTERNAL = (500, grpc.StatusCode.INTERNAL, "server_error")
    UNAVAILABLE = (503, grpc.StatusCode.UNAVAILABLE, "service_unavailable")
    DEADLINE_EXCEEDED = (504, grpc.StatusCode.DEADLINE_EXCEEDED, "timeout")
    # Waited in the queue past its limit: retryable over HTTP, the caller's deadline over gRPC.
    QUEUE_TIMEOUT = (503, grpc.StatusCode.DEADLINE_EXCEEDED, "service_unavailable")

    @property
    def http_status(self) -> int:
        return self.value[0]

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return self.value[1]

    @property
    def type_name(self) -> str:
        return self.value[2]


@dataclass
class ApiError(Exception):
    """A failure to report to the client; `param` names the request field at fault, if any."""

    kind: ErrorKind
    message: str
    param: str | None = None
    # Worth a retry later: REST adds Retry-After (always with 429).
    retry_after: bool = False

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict[str, object]:
        """The OpenAI error shape, used by every REST route so clients parse one format."""
        return {
            "error": {
                "message": self.message,
                "type": self.kind.type_name,
                "param": self.param,
                "code": self.kind.http_status,
            }
        }

    def oip_body(self) -> dict[str, object]:
        """The Open Inference Protocol's error shape, used under /v2."""
        return {"error": self.message}

    def body_for(self, path: str) -> dict[str, object]:
        """The error shape of the protocol that `path` belongs to."""
        return self.oip_body() if is_oip_path(path) else self.body()


def is_oip_path(path: str) -> bool:
    """Routes of the Open Inference Protocol (KServe V2), whose errors are `{"error": "<message>"}`."""
    return path == "/v2" or path.startswith("/v2/")


def invalid(param: str, rule: str) -> ApiError:
    return ApiError(ErrorKind.INVALID_ARGUMENT, f"{param}: {rule}", param)


# Pydantic puts union members ("str", "function-after[...]") into error locations; fields are plain names.
_NAME = re.compile(r"^(?!(?:str|int|float|bool|list|dict|none)$)[A-Za-z_]\w*$")


def from_engine_error(exc: QueueFullError | EngineStoppedError) -> ApiError:
    """The engine's refusals that concern no field: a full queue, a model not running."""
    if isinstance(exc, QueueFullError):
        return ApiError(ErrorKind.RESOURCE_EXHAUSTED, f"{exc}; retry later")
    return ApiError(ErrorKind.UNAVAILABLE, str(exc))


@contextmanager
def fields_named_by(param: Callable[[str], str]) -> Iterator[None]:
    """Report an InvalidRequestError (raised by the engine or the core, naming a field as the engine
    does) as a 400 naming the field as this request's schema does, e.g. `params.max_tokens`."""
    try:
        yield
    except InvalidRequestError as exc:
        raise invalid(param(exc.field), exc.rule) from None


def from_validation_error(exc: ValidationError, prefix: str = "") -> ApiError:
    """The first pydantic error, as "field.path: message"; the location names the field."""
    first = exc.errors(include_url=False)[0]
    parts = [str(p) for p in first["loc"] if isinstance(p, int) or _NAME.match(p)]
    # Model-level checks (schemas.py) name the field they concern in the error's context.
    if (ctx := first.get("ctx")) and "field" in ctx:
        parts.append(str(ctx["field"]))
    field = ".".join(parts) or "body"
    param = prefix + field
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "field required"
    return ApiError(ErrorKind.INVALID_ARGUMENT, f"{param}: {message}", param)
