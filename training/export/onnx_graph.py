"""A tiny ONNX graph builder: unique names, initializers from numpy, and the few op patterns we repeat.

The exporters assemble graphs node by node from trained weights (as onnxruntime-genai's model builder
does) instead of tracing torch, so the graph is exactly what the engine needs and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 21
IR_VERSION = 10
MS_DOMAIN = "com.microsoft"

DTYPES: dict[str, int] = {
    "float32": TensorProto.FLOAT,
    "int64": TensorProto.INT64,
    "int32": TensorProto.INT32,
}

Dim = int | str


class GraphBuilder:
    """Collects nodes, initializers, inputs and outputs, and hands out unique tensor names."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._counts: dict[str, int] = {}
        self._constants: dict[tuple[str, bytes], str] = {}

    def fresh(self, hint: str) -> str:
        """A tensor or node name not used before, readable in Netron."""
        count = self._counts.get(hint, 0)
        self._counts[hint] = count + 1
        return hint if count == 0 else f"{hint}_{count}"

    def add_input(self, name: str, dtype: str, shape: Sequence[Dim]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, DTYPES[dtype], list(shape)))
        return name

    def add_output(self, name: str, dtype: str, shape: Sequence[Dim]) -> str:
        self.outputs.append(helper.make_tensor_value_info(name, DTYPES[dtype], list(shape)))
        return name

    def weight(self, name: str, array: np.ndarray) -> str:
        """Store an array once in the file, under a name that says which parameter it came from."""
        tensor_name = self.fresh(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), tensor_name))
        return tensor_name

    def const(self, value: Any, dtype: str = "int64") -> str:
        """A small constant (shape, axis, index); equal constants share one initializer."""
        array = np.asarray(value, dtype=dtype)
        key = (f"{array.dtype}{array.shape}", array.tobytes())
        if key not in self._constants:
            self._constants[key] = self.weight("const", array)
        return self._constants[key]

    def op(self, op_type: str, inputs: Sequence[str], hint: str = "", **attrs: Any) -> str:
        """Append a one-output node and return its output's (fresh) name."""
        return self.op_into(op_type, inputs, [self.fresh(hint or op_type.lower())], **attrs)[0]

    def op_into(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], **attrs: Any) -> list[str]:
        """Append a node that writes given output names (graph outputs, or several outputs)."""
        domain = attrs.pop("domain", "")
        node_name = self.fresh(f"node/{outputs[0]}")
        node = helper.make_node(op_type, list(inputs), list(outputs), name=node_name, domain=domain, **attrs)
        self.nodes.append(node)
        return list(outputs)

    # Patterns used by every exporter.

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str, out: str = "") -> str:
        """x @ W.T + b for a torch Linear weight [out, in]; W.T is stored so MatMul needs no transpose.

        `out` names the result (a graph output, say); by default it gets a fresh name.
        """
        weight_t = self.weight(f"{name}.weight_t", weight.T)
        if bias is None:
            return self.op_into("MatMul", [x, weight_t], [out or self.fresh(f"{name}/matmul")])[0]
        y = self.op("MatMul", [x, weight_t], f"{name}/matmul")
        return self.op_into(
            "Add", [y, self.weight(f"{name}.bias", bias)], [out or self.fresh(f"{name}/add")]
        )[0]

    def to_model(self, opsets: dict[str, int] | None = None) -> onnx.ModelProto:
        """The finished model, unchecked by onnx: its checker rejects ORT's default-domain ops (such as
        SimplifiedLayerNormalization), so exporters validate by loading in onnxruntime and checking parity."""
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        imports = [helper.make_opsetid("", OPSET)]
        imports += [helper.make_opsetid(domain, version) for domain, version in (opsets or {}).items()]
        return helper.make_model(
            graph, opset_imports=imports, ir_version=IR_VERSION, producer_name="seqserve"
        )
