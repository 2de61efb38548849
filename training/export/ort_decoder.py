"""Drive an exported decoder the way the engine does: in-place KV buffers bound by pointer.

Parity checks and test fixtures use this, so what we verify at export time is the binding scheme the
service relies on (a plain run() that feeds present back as past gives wrong values silently).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort


def make_session(model: onnx.ModelProto | Path | str, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with few threads: exports run beside training on shared cores."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


# ORT's type strings for the cache dtypes a decoder graph may have (docs/artifact-contract.md).
ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int8)": np.int8}


def cache_dtype(session: ort.InferenceSession) -> np.dtype:
    """The element type of the graph's KV cache (float32, float16 or int8), read from its past inputs."""
    past = next(i for i in session.get_inputs() if i.name.startswith("past_key_values."))
    return np.dtype(ORT_TYPES[past.type])


def cache_geometry(session: ort.InferenceSession) -> tuple[int, int, int, int]:
    """(num_layers, kv_heads, max_cache_len, head_dim), read from the graph's past inputs."""
    pasts = [
        i for i in session.get_inputs() if i.name.startswith("past_key_values.") and i.name.endswith(".key")
    ]
    _, kv_heads, max_len, head_dim = pasts[0].shape
    return len(pasts), int(kv_heads), int(max_len), int(head_dim)


class InPlaceDecoder:
    """Row slots over one preallocated buffer per layer, bound as both past and present."""

    def __init__(self, session: ort.InferenceSession, rows: int) -> None:
        self.session = session
        self.num_layers, kv_heads, self.max_len, head_dim = cache_geometry(session)
        shape = (rows, kv_heads, self.max_len, head_dim)
        self.dtype = cache_dtype(session)
        # Kept as attributes: ORT holds raw pointers only, so the arrays must outlive every run.
        self.keys = [np.zeros(shape, self.dtype) for _ in range(self.num_layers)]
        self.values = [np.zeros(shape, self.dtype) for _ in range(self.num_layers)]
        self.lengths = np.zeros(rows, np.int64)
        self.vocab_size = int(session.get_outputs()[0].shape[-1])

    def bind_cache(self, binding: ort.IOBinding, row0: int, count: int) -> None:
        """Bind rows row0..row0+count of every layer buffer as both past and present (same pointer)."""
        for layer in range(self.num_layers):
            for kind, buffers in (("key", self.keys), ("value", self.values)):
                buf = buffers[layer]
                shape = [count, *buf.shape[1:]]
                pointer = buf.ctypes.data + row0 * buf[0].nbytes
                binding.bind_input(f"past_key_values.{layer}.{kind}", "cpu", 0, self.dtype, shape, pointer)
                binding.bind_output(f"present.{layer}.{kind}", "cpu", 0, self.dtype, shape, pointer)

    def step(self, row0: int, tokens: Sequence[Sequence[int]]) -> np.ndarray:
        """Feed new tokens to rows row0.. (right-padded when ragged); returns logits [n, S, vocab].

        Every row's mask counts its cached tokens plus its real new tokens, as the contract says.
        """
        count = len(tokens)
        width = max(len(t) for t in tokens)
        ids = np.zeros((count, width), np.int64)
        cached = self.lengths[row0 : row0 + count].copy()
        for r, row in enumerate(tokens):
            ids[r, : len(row)] = row
        positions = cached[:, None] + np.arange(width)[None, :]
        new = np.array([len(t) for t in tokens], np.int64)
        total = cached + new
        if total.max() > self.max_len:
            raise ValueError(f"a row would exceed the cache length {self.max_len}")
        mask = (np.arange(total.max())[None, :] < total[:, None]).astype(np.int64)
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", mask)
        binding.bind_cpu_input("position_ids", np.minimum(positions, self.max_len - 1))
        self.bind_cache(binding, row0, count)
        logits = np.empty((count, width, self.vocab_size), np.float32)
        binding.bind_output("logits", "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        self.session.run_with_iobinding(binding)
        self.lengths[row0 : row0 + count] = total
        return logits

    def reset(self, row: int) -> None:
        """Free a row; stale keys and values need no zeroing, only the length restarts."""
        self.lengths[row] = 0


def greedy_with_logits(
    session: ort.InferenceSession, prompt: Sequence[int], n_new: int
) -> tuple[list[int], np.ndarray]:
    """Greedy continuation through the in-place cache (one prefill, then one-token steps), with the
    logits [n_new, vocab] each token was chosen from."""
    decoder = InPlaceDecoder(session, rows=1)
    logits = decoder.step(0, [list(prompt)])[0, -1]
    tokens: list[int] = []
    chosen: list[np.ndarray] = []
    for _ in range(n_new):
        chosen.append(logits)
        tokens.append(int(np.argmax(logits)))
        if len(tokens) < n_new:
            logits = decoder.step(0, [[tokens[-1]]])[0, -1]
    return tokens, np.stack(chosen)
