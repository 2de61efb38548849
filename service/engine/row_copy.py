"""Moves slot rows of device buffers, on CPU and CUDA alike: one slot's rows copied to another slot
(KV cache), and a set of rows gathered out of / scattered back into a state buffer (RNN state).

numpy cannot reach device memory and ORT's Python API has no device memcpy over raw pointers, so
each move is an ORT session of one node (Identity, Gather, ScatterND), IO-bound by pointer to the
buffer. The few-hundred-byte models are encoded here directly as protobuf (the service does not
depend on the `onnx` package).
"""

from __future__ import annotations

from collections.abc import Sequence

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


_INT64 = 7


def _model(
    nodes: list[tuple[str, list[str], list[str], dict[str, int]]],
    inputs: list[tuple[str, int, int]],
    outputs: list[tuple[str, int, int]],
) -> bytes:
    """ModelProto bytes; nodes as (op_type, inputs, outputs, int attributes), graph inputs and
    outputs as (name, element type, rank)."""
    graph = b""
    for op_type, node_in, node_out, attributes in nodes:
        node = b"".join(_field(1, n) for n in node_in) + b"".join(_field(2, n) for n in node_out)
        node += _field(4, op_type)
        for name, value in attributes.items():  # AttributeProto: name=1, i=3, type=20 (INT=2)
            node += _field(5, _field(1, name) + _field(3, value) + _field(20, 2))
        graph += _field(1, node)
    graph += _field(2, "row_moves")
    graph += b"".join(_field(11, _tensor_value(*spec)) for spec in inputs)
    graph += b"".join(_field(12, _tensor_value(*spec)) for spec in outputs)
    opset = _field(1, "") + _field(2, _OPSET)
    return _field(1, _IR_VERSION) + _field(7, graph) + _field(8, opset)


def identity_model(dtype: np.dtype, rank: int) -> bytes:
    """ModelProto bytes of `y = Identity(x)` for tensors of `dtype` and `rank`."""
    element = _ONNX_ELEMENT_TYPES[np.dtype(dtype)]
    return _model([("Identity", ["x"], ["y"], {})], [("x", element, rank)], [("y", element, rank)])


def gather_rows_model(dtype: np.dtype, count: int) -> bytes:
    """`rows_i = Gather(state_i [layers, slots, hidden], slots [n], axis=1)` for i < count (h, c)."""
    element = _ONNX_ELEMENT_TYPES[np.dtype(dtype)]
    return _model(
        [("Gather", [f"state_{i}", "slots"], [f"rows_{i}"], {"axis": 1}) for i in range(count)],
        [*((f"state_{i}", element, 3) for i in range(count)), ("slots", _INT64, 1)],
        [(f"rows_{i}", element, 3) for i in range(count)],
    )


def scatter_rows_model(dtype: np.dtype, count: int) -> bytes:
    """`state_out_i = ScatterND(state_i, indices [layers, n, 2] of (layer, slot), rows_i)`, bound with
    state_out_i at state_i's own address: the rows are written in place."""
    element = _ONNX_ELEMENT_TYPES[np.dtype(dtype)]
    return _model(
        [("ScatterND", [f"state_{i}", "indices", f"rows_{i}"], [f"state_out_{i}"], {}) for i in range(count)],
        [
            *((f"state_{i}", element, 3) for i in range(count)),
            ("indices", _INT64, 3),
            *((f"rows_{i}", element, 3) for i in range(count)),
        ],
        [(f"state_out_{i}", element, 3) for i in range(count)],
    )


def _session(model: bytes, device: str) -> ort.InferenceSession:
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model, sess_options=options, providers=providers or ["CPUExecutionProvider"])


class RowCopier:
    """`copy(buffer, src, dst)`: rows [src] -> [dst] of a DeviceBuffer, on the buffer's device."""

    def __init__(self, dtype: np.dtype, rank: int, device: str) -> None:
        self._session = _session(identity_model(dtype, rank), device)
        self._binding = self._session.io_binding()

    def copy(self, buffer: DeviceBuffer, src: int, dst: int) -> None:
        buffer.bind(self._binding, "x", src, 1, as_output=False)
        buffer.bind(self._binding, "y", dst, 1, as_output=True)
        self._session.run_with_iobinding(self._binding)


class StateSlots:
    """Slot rows of `[layers, slots, hidden]` state buffers (an RNN's h, and c for an LSTM), moved on
    their device: gathered into a scratch block for a model run, scattered back in place after it.

    Scratch: `gathered` and `updated` hold, per state, `slots` rows in `[layers, n, hidden]` blocks.
    A run uses the block at a row offset, so a prefill's groups each get their own block and are all
    committed only after every group ran. Everything is bound by pointer on the buffers' device: on
    CUDA the state never visits the host, on the CPU it is the same code. Bindings by pointer cost
    about 9 us each in ORT's Python API, so each is redone only when its block changes (a decode step
    of an unchanged batch size rebinds nothing; the slot numbers go through persistent host arrays).
    """

    def __init__(self, buffers: Sequence[DeviceBuffer]) -> None:
        first = buffers[0]
        if len(first.shape) != 3 or any(b.shape != first.shape or b.dtype != first.dtype for b in buffers):
            raise ValueError("state buffers must share one [layers, slots, hidden] shape and dtype")
        self.buffers = list(buffers)
        self.layers, self.slots, self.hidden = first.shape
        count = len(buffers)
        self.gathered = [DeviceBuffer(first.shape, first.dtype, first.device) for _ in buffers]
        self.updated = [DeviceBuffer(first.shape, first.dtype, first.device) for _ in buffers]
        zeros = [DeviceBuffer(first.shape, first.dtype, first.device, zeroed=True) for _ in buffers]
        self._sources = {"gathered": self.gathered, "updated": self.updated, "zeros": zeros}
        self._gather = _session(gather_rows_model(first.dtype, count), first.device)
        self._scatter = _session(scatter_rows_model(first.dtype, count), first.device)
        self._gather_binding = self._gather.io_binding()
        self._scatter_binding = self._scatter.io_binding()
        whole = self.slots
        for i, buffer in enumerate(self.buffers):  # the whole buffers stay bound: only rows change
            self.bind_block(self._gather_binding, [f"state_{i}"], [buffer], 0, whole, as_output=False)
            self.bind_block(self._scatter_binding, [f"state_{i}"], [buffer], 0, whole, as_output=False)
            self.bind_block(self._scatter_binding, [f"state_out_{i}"], [buffer], 0, whole, as_output=True)
        # (layer, slot) pairs for ScatterND, looked up per step instead of built.
        table = np.stack(np.meshgrid(np.arange(self.layers), np.arange(self.slots), indexing="ij"), axis=-1)
        self._index_table = np.ascontiguousarray(table, dtype=np.int64)
        self._slot_ids = np.zeros(self.slots, dtype=np.int64)
        self._indices = np.zeros(self.layers * self.slots * 2, dtype=np.int64)
        self._gather_key: tuple[int, int] | None = None
        self._scatter_key: tuple[str, int, int] | None = None

    def bind_block(
        self,
        binding: ort.IOBinding,
        names: Sequence[str],
        buffers: Sequence[DeviceBuffer],
        offset: int,
        rows: int,
        as_output: bool,
    ) -> None:
        """Bind `[layers, rows, hidden]` blocks starting `offset` rows into each buffer's memory.

        With offset 0 and rows = slots that is a whole state buffer; in scratch a block is `rows`
        contiguous rows, laid out as the model wants them."""
        for name, buffer in zip(names, buffers, strict=True):
            ptr = buffer.ptr + offset * self.layers * self.hidden * buffer.dtype.itemsize
            bind = binding.bind_output if as_output else binding.bind_input
            bind(name, buffer.device, 0, buffer.dtype, [self.layers, rows, self.hidden], ptr)

    def gather(self, slots: np.ndarray, offset: int = 0) -> None:
        """Rows `slots` of every state into the `gathered` scratch block at `offset`."""
        count = len(slots)
        self._slot_ids[:count] = slots
        if self._gather_key != (offset, count):
            binding = self._gather_binding
            binding.bind_input("slots", "cpu", 0, np.int64, [count], self._slot_ids.ctypes.data)
            names = [f"rows_{i}" for i in range(len(self.buffers))]
            self.bind_block(binding, names, self.gathered, offset, count, as_output=True)
            self._gather_key = (offset, count)
        self._gather.run_with_iobinding(self._gather_binding)

    def scatter(self, slots: np.ndarray, source: str = "updated", offset: int = 0) -> None:
        """Write the `source` scratch block at `offset` (or `zeros`) into rows `slots`, in place."""
        count = len(slots)
        self._indices[: self.layers * count * 2].reshape(self.layers, count, 2)[...] = self._index_table[
            :, slots
        ]
        if self._scatter_key != (source, offset, count):
            binding = self._scatter_binding
            shape = [self.layers, count, 2]
            binding.bind_input("indices", "cpu", 0, np.int64, shape, self._indices.ctypes.data)
            names = [f"rows_{i}" for i in range(len(self.buffers))]
            self.bind_block(binding, names, self._sources[source], offset, count, as_output=False)
            self._scatter_key = (source, offset, count)
        self._scatter.run_with_iobinding(self._scatter_binding)

    def copy(self, src: int, dst: int) -> None:
        self.gather(np.array([src]))
        self.scatter(np.array([dst]), "gathered")

    def zero(self, slots: np.ndarray) -> None:
        """Zero state rows: the start of a sequence."""
        self.scatter(slots, "zeros")
