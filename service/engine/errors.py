"""Errors the engine raises; the API layer maps each to a status code (429, 400, 503, 500)."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every engine error."""


class QueueFullError(EngineError):
    """The waiting queue is at its bound: reject now (HTTP 429 / RESOURCE_EXHAUSTED), never queue forever."""


class EngineStoppedError(EngineError):
    """The engine is not running (not started yet, draining or stopped): HTTP 503 / UNAVAILABLE."""


class InvalidRequestError(EngineError, ValueError):
    """A request the engine refuses as given (HTTP 400): `field` names the parameter (the engine's
    name, e.g. `max_new_tokens`, or `prompt` / `prompt_token_ids`, whichever the request carried) and
    `rule` says what it must be. Structured, so that the API names the field without parsing text."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class RequestTooLargeError(InvalidRequestError):
    """Past a size limit (windows per text, tokens per request): HTTP 413 / RESOURCE_EXHAUSTED, naming
    the field, so a client knows to split the request rather than fix a value."""


class PromptTooLongError(InvalidRequestError):
    """The prompt has more tokens than the model's context or the configured limit (HTTP 400)."""


class ModelIntegrityError(EngineError):
    """A model file does not match the sha256 in its manifest: the model is refused, others still load."""


class ManifestError(EngineError, ValueError):
    """manifest.json is missing, malformed, or describes a graph the engine cannot run."""
