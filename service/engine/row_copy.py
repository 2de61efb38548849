"""Copies one slot's rows between places in a device buffer, on CPU and CUDA alike.

numpy cannot reach device memory and ORT's Python API has no device memcpy over raw pointers, so
the copy is an ORT session of one `Identity` node, IO-bound by pointer: input at the source row,
output at the destination row. The few-hundred-byte model is encoded here directly as protobuf
(the service does not depend on the `onnx` package).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from service.engine.runtime import DeviceBuffer

# ONNX TensorProto element types of every buffer dtype the engine holds (KV caches: float32, float16,
# int8; RNN state: float32, float16).
_ONNX_ELEMENT_TYPES = {
    np.dtype(np.float32): 1,
    np.dtype(np.uint8): 2,
    np.dtype(np.int8): 3,
    np.dtype(np.int32): 6,
    np.dtype(np.int64): 7,
    np.dtype(np.float16): 10,
    np.dtype(np.float64): 11,
}
_IR_VERSION = 8
_OPSET = 13


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes | str | int) -> bytes:
    """One protobuf field: varint (wire type 0) for ints, length-delimited (2) for bytes/strings."""
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint((number << 3) | 2) + _varint(len(data)) + data


def _tensor_value(name: str, element_type: int, rank: int) -> bytes:
    dims = b"".join(_field(1, _field(2, f"d{i}")) for i in range(rank))  # symbolic dims
    tensor_type = _field(1, element_type) + _field(2, dims)
    return _field(1, name) + _field(2, _field(1, tensor_type))


def identity_model(dtype: np.dtype, rank: int) -> bytes:
    """ModelProto bytes of `y = Identity(x)` for tensors of `dtype` and `rank`."""
    element = _ONNX_ELEMENT_TYPES[np.dtype(dtype)]
    node = _field(1, "x") + _field(2, "y") + _field(4, "Identity")
    graph = (
        _field(1, node)
        + _field(2, "row_copy")
        + _field(11, _tensor_value("x", element, rank))
        + _field(12, _tensor_value("y", element, rank))
    )
    opset = _field(1, "") + _field(2, _OPSET)
    return _field(1, _IR_VERSION) + _field(7, graph) + _field(8, opset)


class RowCopier:
    """`copy(buffer, src, dst)`: rows [src] -> [dst] of a DeviceBuffer, on the buffer's device."""

    def __init__(self, dtype: np.dtype, rank: int, device: str) -> None:
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else None
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(
            identity_model(dtype, rank), sess_options=options, providers=providers or ["CPUExecutionProvider"]
        )
        self._binding = self._session.io_binding()

    def copy(self, buffer: DeviceBuffer, src: int, dst: int) -> None:
        buffer.bind(self._binding, "x", src, 1, as_output=False)
        buffer.bind(self._binding, "y", dst, 1, as_output=True)
        self._session.run_with_iobinding(self._binding)
