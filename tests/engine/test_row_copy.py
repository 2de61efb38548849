import numpy as np
import pytest

from service.engine.row_copy import RowCopier, identity_model
from service.engine.runtime import DeviceBuffer


def test_copies_exactly_one_row_in_place():
    buffer = DeviceBuffer((5, 2, 16, 8), np.float32, "cpu")
    buffer.host[:] = np.random.default_rng(0).normal(size=buffer.shape)
    before = buffer.host.copy()
    RowCopier(np.float32, 4, "cpu").copy(buffer, 3, 1)
    assert np.array_equal(buffer.host[1], before[3])
    untouched = [0, 2, 3, 4]
    assert np.array_equal(buffer.host[untouched], before[untouched])


@pytest.mark.parametrize("dtype", [np.float16, np.int8, np.uint8])
def test_copies_rows_of_every_cache_dtype(dtype):
    """float16 (the GPU variant's cache) and int8 (the quantized cache) move by the same Identity."""
    buffer = DeviceBuffer((3, 2, 8, 4), dtype, "cpu")
    buffer.host[:] = np.random.default_rng(1).integers(-100, 100, size=buffer.shape).astype(dtype)
    before = buffer.host.copy()
    RowCopier(np.dtype(dtype), 4, "cpu").copy(buffer, 0, 2)
    assert np.array_equal(buffer.host[2], before[0])
    assert np.array_equal(buffer.host[:2], before[:2])


def test_hand_encoded_identity_model_is_valid_onnx():
    import onnx

    model = onnx.load_from_string(identity_model(np.dtype(np.float16), 3))
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Identity"]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


@pytest.mark.parametrize("count", [1, 2])
def test_state_rows_gather_and_scatter_back_in_place(count):
    """RNN state (h, and c for an LSTM): rows out to scratch, back into other rows, zeroed."""
    from service.engine.row_copy import StateSlots

    rng = np.random.default_rng(2)
    buffers = [DeviceBuffer((2, 6, 4), np.float32, "cpu") for _ in range(count)]
    for b in buffers:
        b.host[:] = rng.normal(size=b.shape)
    before = [b.host.copy() for b in buffers]
    slots = StateSlots(buffers)
    slots.gather(np.array([4, 1]), offset=1)  # block at row offset 1 of the scratch
    for g, b in zip(slots.gathered, before, strict=True):
        block = g.host.reshape(-1)[2 * 4 : 2 * 4 + 2 * 2 * 4].reshape(2, 2, 4)
        assert np.array_equal(block, b[:, [4, 1]])
    slots.scatter(np.array([0, 5]), "gathered", offset=1)
    for b, old in zip(buffers, before, strict=True):
        assert np.array_equal(b.host[:, [0, 5]], old[:, [4, 1]])
        assert np.array_equal(b.host[:, 1:5], old[:, 1:5])
    slots.copy(2, 3)
    slots.zero(np.array([2]))
    for b, old in zip(buffers, before, strict=True):
        assert np.array_equal(b.host[:, 3], old[:, 2])
        assert not b.host[:, 2].any()
