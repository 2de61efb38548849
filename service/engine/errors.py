"""Errors the engine raises; the API layer maps each to a status code (429, 400, 503, 500)."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every engine error."""


class QueueFullError(EngineError):
    """The waiting queue is at its bound: reject now (HTTP 429 / RESOURCE_EXHAUSTED), never queue forever."""


class EngineStoppedError(EngineError):
    """The engine is not running (not started yet, draining or stopped): HTTP 503 / UNAVAILABLE."""


class PromptTooLongError(EngineError, ValueError):
    """The prompt leaves no room in the context for a new token (HTTP 400)."""


class ModelIntegrityError(EngineError):
    """A model file does not match the sha256 in its manifest: the model is refused, others still load."""


class ManifestError(EngineError, ValueError):
    """manifest.json is missing, malformed, or describes a graph the engine cannot run."""
