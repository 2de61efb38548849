"""Recurrent layers as ONNX RNN/LSTM/GRU nodes built straight from torch weights.

torch and ONNX order the gates differently (LSTM: torch i,f,g,o vs ONNX i,o,f,c; GRU: torch r,z,n vs
ONNX z,r,h), and torch's GRU applies the reset gate after the hidden matmul (`linear_before_reset=1`).
"""

from __future__ import annotations

import numpy as np
import onnx
from torch import nn

from training.export.onnx_decoder import numpy_params
from training.export.onnx_graph import GraphBuilder
from training.models.rnn import RNNLM

ONNX_OP = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
# ONNX gate k takes torch's gate TORCH_GATE_ORDER[cell][k].
TORCH_GATE_ORDER = {"rnn": [0], "lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}


def reorder_gates(array: np.ndarray, cell: str, hidden: int) -> np.ndarray:
    """Permute the stacked gate blocks along axis 0 from torch's order to ONNX's."""
    blocks = [array[g * hidden : (g + 1) * hidden] for g in TORCH_GATE_ORDER[cell]]
    return np.concatenate(blocks, axis=0)


def add_recurrent_layer(
    g: GraphBuilder,
    x: str,
    layer: nn.RNNBase,
    prefix: str,
    cell: str,
    initial: tuple[str, str] = ("", ""),
    sequence_lens: str = "",
    direction: str = "forward",
) -> list[str]:
    """One single-direction torch layer as one ONNX node over time-major x [T, B, in].

    `initial` is (initial_h, initial_c) as [1, B, H] names ("" for zeros). Returns the node's outputs
    (Y [T, 1, B, H], Y_h [1, B, H] and, for LSTM, Y_c [1, B, H]).
    """
    params = numpy_params(layer)
    hidden = layer.hidden_size

    def gates(name: str) -> np.ndarray:
        return reorder_gates(params[name], cell, hidden)

    weight = g.weight(f"{prefix}.W", gates("weight_ih_l0")[None])
    recurrence = g.weight(f"{prefix}.R", gates("weight_hh_l0")[None])
    bias = g.weight(f"{prefix}.B", np.concatenate([gates("bias_ih_l0"), gates("bias_hh_l0")])[None])
    inputs = [x, weight, recurrence, bias, sequence_lens, initial[0]]
    attrs: dict[str, object] = {"hidden_size": hidden, "direction": direction}
    if cell == "lstm":
        inputs.append(initial[1])
    if cell == "gru":
        attrs["linear_before_reset"] = 1
    if cell == "rnn" and layer.nonlinearity != "tanh":
        attrs["activations"] = ["Relu"]
    count = 3 if cell == "lstm" else 2
    base = g.fresh(f"{prefix}/{cell}")
    return g.op_into(ONNX_OP[cell], inputs, [f"{base}/Y", f"{base}/Y_h", f"{base}/Y_c"][:count], **attrs)


def build_recurrent_lm(model: RNNLM) -> onnx.ModelProto:
    """input_ids + state_h (+ state_c) → logits + state_h_out (+ state_c_out), per the artifact contract."""
    config = model.config
    params = numpy_params(model)
    lstm = config.cell == "lstm"
    g = GraphBuilder(f"seqserve_{config.cell}_lm")
    state_shape = [config.num_layers, "batch", config.hidden_size]
    input_ids = g.add_input("input_ids", "int64", ["batch", "sequence_length"])
    state_h = g.add_input("state_h", "float32", state_shape)
    state_c = g.add_input("state_c", "float32", state_shape) if lstm else ""

    embedding = g.weight("embedding.weight", params["embedding.weight"])
    x = g.op(
        "Transpose",
        [g.op("Gather", [embedding, input_ids], "embedding", axis=0)],
        "time_major",
        perm=[1, 0, 2],
    )
    final_h, final_c = [], []
    for i, layer in enumerate(model.layers):
        start, end = g.const([i]), g.const([i + 1])
        h0 = g.op("Slice", [state_h, start, end, g.const([0])], f"layers.{i}/h0")
        c0 = g.op("Slice", [state_c, start, end, g.const([0])], f"layers.{i}/c0") if lstm else ""
        outputs = add_recurrent_layer(g, x, layer, f"layers.{i}", config.cell, (h0, c0))
        x = g.op("Squeeze", [outputs[0], g.const([1])], f"layers.{i}/output")
        final_h.append(outputs[1])
        if lstm:
            final_c.append(outputs[2])
    batch_major = g.op("Transpose", [x], "batch_major", perm=[1, 0, 2])
    if config.tie_weights:
        head = g.op("Transpose", [embedding], "head_t", perm=[1, 0])
        logits = g.op("MatMul", [batch_major, head], "head/matmul")
        g.op_into("Add", [logits, g.weight("head.bias", params["head.bias"])], ["logits"])
    else:
        g.linear(batch_major, params["head.weight"], params["head.bias"], "head", out="logits")
    g.op_into("Concat", final_h, ["state_h_out"], axis=0)
    g.add_output("logits", "float32", ["batch", "sequence_length", config.vocab_size])
    g.add_output("state_h_out", "float32", state_shape)
    if lstm:
        g.op_into("Concat", final_c, ["state_c_out"], axis=0)
        g.add_output("state_c_out", "float32", state_shape)
    return g.to_model()
