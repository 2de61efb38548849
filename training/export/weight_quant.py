"""Quantized-weight candidates of a decoder graph, built with onnxruntime's own quantizers.

Why: at small batch a decode step reads every weight once, so fewer weight bytes can mean a faster
step; whether it does on a given CPU is a benchmark question (bench/weight_quantization.py), and what
it costs in quality is measured here, on the graph, in nats/char. Candidates:
- `int4-matmulnbits` / `int8-matmulnbits`: MatMulNBits, symmetric blocks of 32 along K, with
  accuracy_level 4 (activations quantized to int8 inside the kernel: the fast CPU path);
- `int8-dynamic`: quantize_dynamic's MatMulInteger with per-channel int8 weights.
Only MatMuls with an initializer weight are quantized: the tied LM head reads the embedding through a
Transpose and stays float32 (it is also the embedding lookup's table).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

CANDIDATES = ("int4-matmulnbits", "int8-matmulnbits", "int8-dynamic")
BLOCK_SIZE = 32
ACCURACY_LEVEL = 4


def quantize_weights(graph: onnx.ModelProto, candidate: str) -> onnx.ModelProto:
    """The graph with its MatMul weights in the candidate's format (inputs and outputs unchanged)."""
    if candidate in ("int4-matmulnbits", "int8-matmulnbits"):
        quantizer = MatMulNBitsQuantizer(
            onnx.ModelProto.FromString(graph.SerializeToString()),
            bits=4 if candidate.startswith("int4") else 8,
            block_size=BLOCK_SIZE,
            is_symmetric=True,
            accuracy_level=ACCURACY_LEVEL,
        )
        # The quantizer logs every node at INFO; the export's log needs only the count.
        logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
        quantizer.process()
        return quantizer.model.model
    if candidate == "int8-dynamic":
        with tempfile.TemporaryDirectory() as tmp:
            source, target = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
            onnx.save_model(graph, str(source))
            quantize_dynamic(
                str(source),
                str(target),
                op_types_to_quantize=["MatMul"],
                per_channel=True,
                weight_type=QuantType.QInt8,
                # Shape inference cannot type the outputs of com.microsoft ops; every activation is float32.
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
            return onnx.load(str(target))
    raise ValueError(f"unknown weight candidate {candidate!r}; choose one of {CANDIDATES}")
