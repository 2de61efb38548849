"""Store a model's weights as float16 in the file and compute in float32: half the bytes on disk.

Why not a float16 graph: onnxruntime's CPU kernels are float32, so the graph keeps float32 compute and
each stored float16 weight feeds one Cast, which onnxruntime constant-folds when it loads the session.
The loaded model is the same size in memory and runs at the same speed; only the artifact shrinks.

Why round the torch weights first: a weight that is exactly representable in float16 survives the
trip bit for bit, so the exported graph computes exactly what the (rounded) torch model computes, the
parity check keeps its tolerance, and the accuracy recorded is the accuracy of the weights shipped.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

# Below this many elements a Cast node costs more bytes than float16 saves.
MIN_ELEMENTS = 1024


@torch.no_grad()
def round_weights_to_float16(model: nn.Module) -> nn.Module:
    """Round every floating-point parameter to the nearest float16 value, in place.

    Buffers (rotary tables, masks) are left alone: they are computed, not learned, and the graph
    builders compute their own copies in float32.
    """
    for tensor in model.parameters():
        if tensor.is_floating_point():
            tensor.copy_(tensor.to(torch.float16).to(tensor.dtype))
    return model


def store_weights_as_float16(model: onnx.ModelProto, min_elements: int = MIN_ELEMENTS) -> int:
    """Rewrite, in place, each float32 initializer that float16 holds exactly as a float16 initializer
    plus a Cast back to float32 under the original name. Returns how many were rewritten.

    Initializers that float16 would change (computed tables, values out of range) stay float32, so
    the rewrite never alters a number the graph computes with.
    """
    graph = model.graph
    kept, casts, count = [], [], 0
    for tensor in graph.initializer:
        array = numpy_helper.to_array(tensor) if tensor.data_type == TensorProto.FLOAT else None
        if array is None or array.size < min_elements:
            kept.append(tensor)
            continue
        with np.errstate(over="ignore"):  # out of range becomes inf, which the check below refuses
            half = array.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), array):
            kept.append(tensor)
            continue
        stored = f"{tensor.name}.float16"
        kept.append(numpy_helper.from_array(half, stored))
        casts.append(
            helper.make_node(
                "Cast", [stored], [tensor.name], name=f"cast/{tensor.name}", to=TensorProto.FLOAT
            )
        )
        count += 1
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return count
