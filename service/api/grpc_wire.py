"""Deserialising requests without turning a client's bad bytes into a server error.

grpcio answers a request that fails to parse (e.g. invalid UTF-8 in a string field) with a generic
error; we parse ourselves, hand the servicer a `Malformed` marker, and name the field at fault by
walking the wire format.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message


@dataclass(frozen=True)
class Malformed:
    """Stands in for a request that did not parse; `reason` names the field when it can."""

    reason: str


def safe_deserializer(message_cls: type[Message]) -> Callable[[bytes], Message | Malformed]:
    def parse(data: bytes) -> Message | Malformed:
        try:
            return message_cls.FromString(data)
        except DecodeError:
            field = find_invalid_utf8(message_cls.DESCRIPTOR, data)
            if field:
                return Malformed(f"{field}: must be valid UTF-8 text")
            return Malformed(f"request: not a valid {message_cls.DESCRIPTOR.full_name}")

    return parse


def find_invalid_utf8(descriptor: Descriptor, data: bytes, prefix: str = "") -> str | None:
    """The dotted name of the first string field whose bytes are not UTF-8, or None."""
    pos = 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                _, pos = _varint(data, pos)
            elif wire_type == 1:
                pos += 8
            elif wire_type == 5:
                pos += 4
            elif wire_type == 2:
                length, pos = _varint(data, pos)
                chunk, pos = data[pos : pos + length], pos + length
                field = descriptor.fields_by_number.get(number)
                if field is None:
                    continue
                if field.type == FieldDescriptor.TYPE_STRING:
                    try:
                        chunk.decode("utf-8")
                    except UnicodeDecodeError:
                        return prefix + field.name
                elif field.type == FieldDescriptor.TYPE_MESSAGE:
                    found = find_invalid_utf8(field.message_type, chunk, f"{prefix}{field.name}.")
                    if found:
                        return found
            else:
                return None
    except IndexError:
        return None
    return None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def unary_handler(
    method: Callable[..., Awaitable[Any]], request_cls: type[Message], response_cls: type[Message]
) -> grpc.RpcMethodHandler:
    """A unary RPC registered by hand with the forgiving deserializer (not the generated helper)."""
    return grpc.unary_unary_rpc_method_handler(
        method,
        request_deserializer=safe_deserializer(request_cls),
        response_serializer=response_cls.SerializeToString,
    )
