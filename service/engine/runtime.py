"""One ORT session per model: provider and variant choice, threads, and the device its buffers live on.

`get_available_providers()` lists CUDA even where no GPU works, so the provider really in use is
read back from `session.get_providers()` after the session exists. That is a chicken-and-egg with
the model's variants (a float16 graph for CUDA, the float32 or int8-cache graph for the CPU): the
CUDA variant is opened first, and only when its session really runs on CUDA is it kept; otherwise
the CPU variant is opened on the CPU and one warning says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.engine import capacity
from service.engine.manifest import Manifest, ModelVariant

log = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
}
_PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


class ModelSession:
    """An ORT session plus the facts the engine binds against: provider, device, input and output names."""

    def __init__(
        self,
        model_path: Path,
        provider: str = "cpu",
        intra_op_threads: int = 0,
        allow_spinning: bool = False,
        optimized_model_path: Path | None = None,
        variant: ModelVariant | None = None,
        profile_prefix: Path | None = None,
    ) -> None:
        """`optimized_model_path` makes ORT write the graph as optimized for its providers there, and
        `profile_prefix` turns on ORT's profiler (placement.py reads both: Memcpy nodes, node providers)."""
        if provider not in _PROVIDERS:
            raise ValueError(f"provider: must be one of {sorted(_PROVIDERS)}, got {provider!r}")
        options = ort.SessionOptions()
        self.threads = capacity.intra_op_threads(intra_op_threads, provider)
        options.intra_op_num_threads = self.threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimized_model_path is not None:
            options.optimized_model_filepath = str(optimized_model_path)
        if profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = str(profile_prefix)
        self.model_path = Path(model_path)
        self.variant = variant
        self.session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=_PROVIDERS[provider]
        )
        active = self.session.get_providers()
        self._provider = "cuda" if "CUDAExecutionProvider" in active else "cpu"
        log.info(
            "session %s: provider %s (ORT providers %s), %d intra-op threads, spinning %s",
            model_path.name,
            self._provider,
            active,
            self.threads,
            "on" if allow_spinning else "off",
        )
        # Called right before each model run: the scheduler hands its pending events to the event
        # loop here, so the loop works on them while ORT computes with the GIL released.
        self.before_run: Callable[[], None] | None = None
        self.input_names: list[str] = [i.name for i in self.session.get_inputs()]
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]

    @property
    def provider(self) -> str:
        """The provider really in use, `cpu` or `cuda`, as ORT reports it after loading."""
        return self._provider

    @property
    def device(self) -> str:
        """Device name for `bind_input`/`bind_output` and `OrtValue` allocation."""
        return "cuda" if self._provider == "cuda" else "cpu"

    def output_dtype(self, name: str) -> np.dtype:
        """numpy dtype of a graph output, from ORT's `tensor(float)`-style type string."""
        kind = next(o.type for o in self.session.get_outputs() if o.name == name)
        return np.dtype(_ORT_TYPES[kind])

    def input_dtype(self, name: str) -> np.dtype:
        """numpy dtype of a graph input (the KV cache's and RNN state's buffers are allocated in it)."""
        kind = next(i.type for i in self.session.get_inputs() if i.name == name)
        return np.dtype(_ORT_TYPES[kind])

    def io_binding(self) -> ort.IOBinding:
        return self.session.io_binding()

    def run_binding(self, binding: ort.IOBinding) -> None:
        if self.before_run is not None:
            self.before_run()
        self.session.run_with_iobinding(binding)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A plain run with outputs named (ORT returns them in graph order)."""
        if self.before_run is not None:
            self.before_run()
        return dict(zip(self.output_names, self.session.run(None, feeds), strict=True))


class DeviceBuffer:
    """A preallocated float32/int tensor on the session's device, addressable by pointer for IO binding.

    On CPU it is a numpy array; on CUDA an `OrtValue` in device memory. Either way the engine keeps
    the object alive for as long as a binding may point at it (ORT holds no reference to raw pointers).
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, device: str, zeroed: bool = False) -> None:
        """`zeroed` fills device memory with zeros (host memory always starts zeroed); a KV cache
        needs no zeros (stale rows are never attended to), an RNN state's zero rows start sequences."""
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.device = device
        if device == "cpu":
            self.host: np.ndarray | None = np.zeros(self.shape, dtype=self.dtype)
            self._ortvalue = None
            self.ptr = self.host.ctypes.data
        else:
            self.host = None
            if zeroed:
                zeros = np.zeros(self.shape, dtype=self.dtype)
                self._ortvalue = ort.OrtValue.ortvalue_from_numpy(zeros, device, 0)
            else:
                self._ortvalue = ort.OrtValue.ortvalue_from_shape_and_type(
                    list(self.shape), self.dtype, device, 0
                )
            self.ptr = self._ortvalue.data_ptr()
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def row_ptr(self, row: int) -> int:
        """Address of row `row` along the first axis (rows are contiguous in C order)."""
        return self.ptr + row * self.row_bytes

    def bind(self, binding: ort.IOBinding, name: str, row0: int, rows: int, as_output: bool) -> None:
        """Bind rows [row0, row0+rows) of this buffer as input or output `name`, in place, by pointer."""
        shape = [rows, *self.shape[1:]]
        if as_output:
            binding.bind_output(name, self.device, 0, self.dtype, shape, self.row_ptr(row0))
        else:
            binding.bind_input(name, self.device, 0, self.dtype, shape, self.row_ptr(row0))


def open_variant_session(
    manifest: Manifest,
    provider: str = "cpu",
    intra_op_threads: int = 0,
    allow_spinning: bool = False,
    optimized_model_path: Path | None = None,
    profile_prefix: Path | None = None,
) -> ModelSession:
    """The session of the variant that matches the provider really in use.

    With `provider="cuda"` the CUDA variant is tried when this onnxruntime has the CUDA provider at
    all; it is kept only if `get_providers()` then reports CUDA. Otherwise (a CPU build, no device,
    missing CUDA libraries) the CPU variant is opened on the CPU, with one warning naming the reason:
    a float16 graph meant for the GPU would run on the CPU far slower than the CPU's own graph.
    """
    if provider == "cuda":
        variant = manifest.variant("cuda")
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            reason = f"this onnxruntime has no CUDAExecutionProvider (it has {ort.get_available_providers()})"
        else:
            try:
                session = ModelSession(
                    manifest.variant_path(variant),
                    "cuda",
                    intra_op_threads,
                    allow_spinning,
                    optimized_model_path,
                    variant,
                    profile_prefix,
                )
            except Exception as exc:  # ORT raises its own Fail/RuntimeException types
                reason = f"opening {variant.file} on CUDA failed: {exc}"
            else:
                if session.provider == "cuda":
                    return session
                active = session.session.get_providers()
                reason = f"the session of {variant.file} came back with providers {active}"
                del session
        cpu_variant = manifest.variant("cpu")
        log.warning(
            "model %s: CUDA was asked for but is not active (%s); serving the CPU variant %s on the CPU",
            manifest.name,
            reason,
            cpu_variant.file,
        )
        provider = "cpu"
    variant = manifest.variant(provider)
    return ModelSession(
        manifest.variant_path(variant),
        provider,
        intra_op_threads,
        allow_spinning,
        optimized_model_path,
        variant,
        profile_prefix,
    )
