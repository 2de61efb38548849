"""OpenAPI request bodies for routes that read their body themselves (raw bytes, binary extension):
FastAPI cannot infer those, and without them the schema (and the fuzzer that reads it) knows nothing
of what the route takes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """The schema with every local `$ref` replaced by its definition (FastAPI does not merge `$defs`
    of an `openapi_extra` body into the document's components)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return _inline(schema, schema.get("$defs", {}))


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema_of(model)}}}}


def json_or_binary_body(model: type[BaseModel]) -> dict[str, Any]:
    """JSON, or (binary tensor data extension) the JSON header followed by raw tensor bytes."""
    body = json_body(model)
    body["requestBody"]["content"]["application/octet-stream"] = {
        "schema": {"type": "string", "format": "binary"}
    }
    return body
