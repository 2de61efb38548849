"""An int8 KV cache: scales calibrated on training text, baked into the decoder graph's attention.

Why: decode at long context is bound by reading the cache; int8 reads a quarter of float32's bytes.
onnxruntime's com.microsoft.GroupQueryAttention (1.31) quantizes the new keys and values itself when
`kv_cache_bit_width = 8` and `k_scale` / `v_scale` (inputs 12 and 13) are given, and dequantizes inside
the kernel, so the engine's in-place binding stays as it is with int8 buffers. Scales are symmetric,
`absmax / 127`, per tensor or per channel (`kv_heads * head_dim`, head-major), measured on the cache
contents (keys after rotary) of the float32 graph over windows of the training split.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from training.export.graph_scoring import TextStream
from training.export.ort_decoder import InPlaceDecoder

QUANT_TYPES = ("PER_TENSOR", "PER_CHANNEL")
# Largest |logit| difference allowed between the int8-cache graph and the same graph with a float32
# cache, over prefill and greedy decode steps, as a share of the largest |logit| there: quantization
# error scales with the activations. The committed shakespeare-gpt measures 0.004 (0.08 of 19) per
# channel; a wrong scale or layout gives differences of the logits' own size.
INT8_CACHE_TOLERANCE = 0.02
PARITY_STEPS = 20
INT8_MAX = 127.0
GQA_K_SCALE_INPUT = 12
CALIBRATION_WINDOWS = 32
KINDS = ("key", "value")


def calibration_windows(
    stream: TextStream, context_length: int, count: int = CALIBRATION_WINDOWS
) -> list[list[int]]:
    """`count` evenly spaced full-context windows of the (training) stream: a fixed, repeatable sample."""
    step = max(1, (stream.tokens.size - context_length) // count)
    return [stream.tokens[i * step : i * step + context_length].tolist() for i in range(count)]


def calibrate_scales(
    session: ort.InferenceSession, windows: list[list[int]], quant_type: str, batch: int = 8
) -> dict[str, list[list[float]]]:
    """{"key": [layer][channels], "value": ...}: absmax/127 of what the float32 graph writes to its cache."""
    if quant_type not in QUANT_TYPES:
        raise ValueError(f"quant_type must be one of {QUANT_TYPES}, not {quant_type!r}")
    absmax: dict[str, list[np.ndarray]] = {}
    for first in range(0, len(windows), batch):
        rows = windows[first : first + batch]
        decoder = InPlaceDecoder(session, rows=len(rows))
        decoder.step(0, rows)
        length = len(rows[0])
        for kind, buffers in (("key", decoder.keys), ("value", decoder.values)):
            seen = [np.abs(b[:, :, :length]).max(axis=(0, 2)).reshape(-1) for b in buffers]  # [kv_heads*hd]
            absmax[kind] = (
                seen
                if kind not in absmax
                else [np.maximum(a, s) for a, s in zip(absmax[kind], seen, strict=True)]
            )
    scales: dict[str, list[list[float]]] = {}
    for kind in KINDS:
        per_layer = (
            absmax[kind] if quant_type == "PER_CHANNEL" else [np.array([a.max()]) for a in absmax[kind]]
        )
        # A channel that never moved keeps a tiny non-zero step (zero would divide by zero in the kernel).
        scales[kind] = [np.maximum(a / INT8_MAX, 1e-8).astype(np.float32).tolist() for a in per_layer]
    return scales


def cache_logit_diff(
    quantized: ort.InferenceSession,
    reference: ort.InferenceSession,
    prompts: list[list[int]],
    steps: int = PARITY_STEPS,
) -> tuple[float, float]:
    """(max |logit diff|, max |reference logit|) of two graphs over each prompt's prefill and `steps`
    decode steps, both fed the reference's greedy tokens (a near-tie never forks the two texts)."""
    worst = largest = 0.0
    for prompt in prompts:
        ours, theirs = InPlaceDecoder(quantized, rows=1), InPlaceDecoder(reference, rows=1)
        a, b = ours.step(0, [prompt]), theirs.step(0, [prompt])
        worst, largest = max(worst, float(np.abs(a - b).max())), max(largest, float(np.abs(b).max()))
        for _ in range(steps):
            token = [[int(b[0, -1].argmax())]]
            a, b = ours.step(0, token), theirs.step(0, token)
            worst, largest = max(worst, float(np.abs(a - b).max())), max(largest, float(np.abs(b).max()))
    return worst, largest


def _layer_of(node: onnx.NodeProto) -> int:
    """The layer a GroupQueryAttention node belongs to, from its past key input's contract name."""
    past = node.input[3]
    if not past.startswith("past_key_values."):
        raise ValueError(f"{node.name}: past key input {past!r} is not a contract cache name")
    return int(past.split(".")[1])


def quantize_kv_cache(
    graph: onnx.ModelProto, scales: dict[str, list[list[float]]], quant_type: str
) -> onnx.ModelProto:
    """A copy of the decoder whose cache inputs/outputs are int8, with the scales as initializers."""
    model = copy.deepcopy(graph)
    for node in model.graph.node:
        if node.op_type != "GroupQueryAttention":
            continue
        layer = _layer_of(node)
        names = []
        for kind in KINDS:
            name = f"kv_scale.{layer}.{kind}"
            array = np.asarray(scales[kind][layer], np.float32)
            model.graph.initializer.append(numpy_helper.from_array(array, name))
            names.append(name)
        inputs = list(node.input) + [""] * (GQA_K_SCALE_INPUT - len(node.input))
        del node.input[:]
        node.input.extend([*inputs[:GQA_K_SCALE_INPUT], *names])
        node.attribute.extend(
            [
                onnx.helper.make_attribute("kv_cache_bit_width", 8),
                onnx.helper.make_attribute("k_quant_type", quant_type),
                onnx.helper.make_attribute("v_quant_type", quant_type),
            ]
        )
    for value in [*model.graph.input, *model.graph.output]:
        if value.name.startswith(("past_key_values.", "present.")):
            value.type.tensor_type.elem_type = onnx.TensorProto.INT8
    return model


def strip_kv_quantization(graph: onnx.ModelProto) -> onnx.ModelProto:
    """The same decoder with a float32 cache: scale inputs, quantization attributes and scales removed.

    The int8 graph differs from its float32-cache build only there, so this is what the int8 graph is
    compared against, and what a float32-cache comparison (bench/engine) runs."""
    model = copy.deepcopy(graph)
    quantized = {"kv_cache_bit_width", "k_quant_type", "v_quant_type"}
    for node in model.graph.node:
        if node.op_type != "GroupQueryAttention":
            continue
        inputs = list(node.input[:GQA_K_SCALE_INPUT])
        while inputs and not inputs[-1]:
            inputs.pop()
        del node.input[:]
        node.input.extend(inputs)
        kept = [a for a in node.attribute if a.name not in quantized]
        del node.attribute[:]
        node.attribute.extend(kept)
    kept_initializers = [t for t in model.graph.initializer if not t.name.startswith("kv_scale.")]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept_initializers)
    for value in [*model.graph.input, *model.graph.output]:
        if value.name.startswith(("past_key_values.", "present.")):
            value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return model


def kv_cache_record(
    geometry: dict[str, Any],
    scales: dict[str, list[list[float]]],
    quant_type: str,
    windows: int,
    context: int,
) -> dict[str, Any]:
    """The manifest's `onnx.kv_cache` for an int8 cache (docs/artifact-contract.md)."""
    return {
        **geometry,
        "dtype": "int8",
        "quant_type": quant_type,
        "scales": {kind: [[round(s, 9) for s in layer] for layer in scales[kind]] for kind in KINDS},
        "calibration": {
            "text": "the recipe's training split",
            "tokens": windows * context,
            "rule": "absmax / 127",
        },
    }
