"""Open Inference Protocol tensors: datatypes, and their data as JSON lists, typed gRPC lists or raw
bytes (the binary tensor data extension over REST, raw_*_contents over gRPC).

Raw data is little-endian and row-major; a BYTES element is a 4-byte little-endian length and then
its bytes. Every decoding error is an ApiError naming the tensor field at fault.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.api.errors import invalid

# Fixed-size datatypes and their little-endian numpy types; BYTES is variable-size.
NUMERIC = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
BYTES = "BYTES"
DATATYPES = (*NUMERIC, BYTES)
_LENGTH = struct.Struct("<I")


@dataclass
class Tensor:
    """One input or output: for BYTES, `data` is a list of bytes; otherwise a flat numpy array."""

    name: str
    datatype: str
    shape: list[int]
    data: list[bytes] | np.ndarray

    def __len__(self) -> int:
        return len(self.data)


def element_count(shape: Sequence[int], field: str) -> int:
    if any(d < 0 for d in shape):
        raise invalid(field, "dimensions must be >= 0")
    return math.prod(shape)


def check_datatype(datatype: str, field: str) -> None:
    if datatype not in DATATYPES:
        raise invalid(field, f"unknown datatype {datatype!r} (one of {', '.join(DATATYPES)})")


def flatten(data: Any) -> list[Any]:
    """JSON tensor data may be flat or nested row-major lists."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(d, list) for d in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def from_json(name: str, datatype: str, shape: list[int], data: Any, field: str) -> Tensor:
    """A tensor from JSON data; BYTES elements are JSON strings (UTF-8)."""
    check_datatype(datatype, field + ".datatype")
    count = element_count(shape, field + ".shape")
    values = flatten(data)
    if len(values) != count:
        raise invalid(field + ".data", f"holds {len(values)} elements; shape {shape} needs {count}")
    if datatype == BYTES:
        if not all(isinstance(v, str) for v in values):
            raise invalid(field + ".data", "BYTES elements must be JSON strings")
        try:
            return Tensor(name, datatype, shape, [v.encode("utf-8") for v in values])
        except UnicodeEncodeError:
            raise invalid(field + ".data", "must be valid UTF-8 text") from None
    if not all(isinstance(v, bool | int | float) for v in values):
        raise invalid(field + ".data", f"{datatype} elements must be JSON numbers or booleans")
    try:
        array = np.array(values, dtype=NUMERIC[datatype])
    except (OverflowError, ValueError):
        raise invalid(field + ".data", f"a value does not fit {datatype}") from None
    return Tensor(name, datatype, shape, array)


def from_raw(name: str, datatype: str, shape: list[int], raw: bytes, field: str) -> Tensor:
    """A tensor from raw bytes (binary extension or raw_input_contents)."""
    check_datatype(datatype, field + ".datatype")
    count = element_count(shape, field + ".shape")
    if datatype == BYTES:
        elements = decode_bytes(raw, field)
        if len(elements) != count:
            raise invalid(field, f"holds {len(elements)} BYTES elements; shape {shape} needs {count}")
        return Tensor(name, datatype, shape, elements)
    dtype = NUMERIC[datatype]
    if len(raw) != count * dtype.itemsize:
        raise invalid(field, f"{len(raw)} bytes; shape {shape} of {datatype} needs {count * dtype.itemsize}")
    return Tensor(name, datatype, shape, np.frombuffer(raw, dtype=dtype))


def decode_bytes(raw: bytes, field: str) -> list[bytes]:
    """Length-prefixed BYTES elements; a length past the end is the client's error."""
    elements: list[bytes] = []
    pos, end = 0, len(raw)
    view = memoryview(raw)
    while pos < end:
        if pos + 4 > end:
            raise invalid(field, "BYTES data ends inside an element's 4-byte length")
        (length,) = _LENGTH.unpack_from(raw, pos)
        pos += 4
        if pos + length > end:
            raise invalid(field, "a BYTES element's length runs past the end of the data")
        elements.append(bytes(view[pos : pos + length]))
        pos += length
    return elements


def encode_bytes(elements: Sequence[bytes]) -> bytes:
    parts: list[bytes] = []
    for e in elements:
        parts.append(_LENGTH.pack(len(e)))
        parts.append(e)
    return b"".join(parts)


def to_raw(tensor: Tensor) -> bytes:
    if tensor.datatype == BYTES:
        return encode_bytes(tensor.data)  # type: ignore[arg-type]
    return np.ascontiguousarray(tensor.data, dtype=NUMERIC[tensor.datatype]).tobytes()


def to_json_data(tensor: Tensor) -> list[Any]:
    """Flat row-major data as JSON values; BYTES as text (outputs here are always UTF-8)."""
    if tensor.datatype == BYTES:
        return [e.decode("utf-8", errors="replace") for e in tensor.data]  # type: ignore[union-attr]
    return tensor.data.tolist()  # type: ignore[union-attr]


def texts(tensor: Tensor, field: str) -> list[str]:
    """A BYTES tensor's elements as text: inputs of text models must be UTF-8."""
    if tensor.datatype != BYTES:
        raise invalid(field + ".datatype", f"must be BYTES, not {tensor.datatype}")
    try:
        return [e.decode("utf-8") for e in tensor.data]  # type: ignore[union-attr]
    except UnicodeDecodeError:
        raise invalid(field + ".data", "must be valid UTF-8 text") from None
