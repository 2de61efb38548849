"""Classifier graphs: input_ids + attention_mask (right-padded) → probabilities [batch, num_labels].

The softmax is inside the graph, so the service only reads numbers out. Padding never reaches a
row's real tokens: the Transformer is causal and pools its last real token (or the masked mean of
its real tokens); the recurrent model runs
with ONNX `sequence_lens`, whose reverse direction reverses each row within its own length, which is
exactly what `RNNClassifier` does for its backward stack.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch

from training.export.onnx_decoder import add_decoder_body, numpy_params
from training.export.onnx_graph import MS_DOMAIN, GraphBuilder
from training.export.onnx_recurrent import add_recurrent_layer
from training.models.rnn import RNNClassifier
from training.models.transformer import TransformerClassifier

FLOAT_MIN = float(torch.finfo(torch.float32).min)


def _classifier_inputs(g: GraphBuilder) -> tuple[str, str]:
    return (
        g.add_input("input_ids", "int64", ["batch", "sequence_length"]),
        g.add_input("attention_mask", "int64", ["batch", "sequence_length"]),
    )


def _finish(g: GraphBuilder, pooled: str, head: torch.nn.Linear, num_labels: int) -> onnx.ModelProto:
    params = numpy_params(head)
    logits = g.linear(pooled, params["weight"], params["bias"], "head")
    g.op_into("Softmax", [logits], ["probabilities"], axis=-1)
    g.add_output("probabilities", "float32", ["batch", num_labels])
    return g.to_model({MS_DOMAIN: 1})


def build_transformer_classifier(model: TransformerClassifier) -> onnx.ModelProto:
    """The LM body without a cache, then the head on each row's last real token or their mean."""
    config = model.lm.config
    g = GraphBuilder("seqserve_transformer_classifier")
    input_ids, mask = _classifier_inputs(g)
    # Positions 0..len-1 for real tokens; padding after them repeats the last one (never read).
    counted = g.op("CumSum", [mask, g.const(1)], "mask_cumsum")
    positions = g.op("Max", [g.op("Sub", [counted, g.const(1)], "positions_raw"), g.const(0)], "position_ids")
    hidden = add_decoder_body(g, model.lm, (input_ids, positions, mask), config.context_length)
    count = g.op("ReduceSum", [mask, g.const([1])], "token_count", keepdims=1)
    if model.pooling == "mean":
        keep = g.op(
            "Unsqueeze", [g.op("Cast", [mask], "mask_f", to=onnx.TensorProto.FLOAT), g.const([2])], "keep"
        )
        total = g.op("ReduceSum", [g.op("Mul", [hidden, keep], "masked"), g.const([1])], "summed", keepdims=0)
        real = g.op(
            "Cast", [g.op("Max", [count, g.const(1)], "count_floor")], "count_f", to=onnx.TensorProto.FLOAT
        )
        pooled = g.op("Div", [total, real], "mean_pooled")
        return _finish(g, pooled, model.head, model.head.out_features)
    last = g.op("Sub", [count, g.const(1)], "last_index")
    pooled = g.op("GatherND", [hidden, last], "last_token", batch_dims=1)
    return _finish(g, pooled, model.head, model.head.out_features)


def _run_stack(
    g: GraphBuilder, x: str, layers: torch.nn.ModuleList, prefix: str, cell: str, lengths: str, direction: str
) -> tuple[str, str]:
    """A stack of single-direction layers over time-major x; returns (outputs [T, B, H], final h [B, H])."""
    final = ""
    for i, layer in enumerate(layers):
        outputs = add_recurrent_layer(
            g, x, layer, f"{prefix}.{i}", cell, sequence_lens=lengths, direction=direction
        )
        x = g.op("Squeeze", [outputs[0], g.const([1])], f"{prefix}.{i}/output")
        final = g.op("Squeeze", [outputs[1], g.const([0])], f"{prefix}.{i}/final_h")
    return x, final


def build_rnn_classifier(model: RNNClassifier) -> onnx.ModelProto:
    """Embedding → forward (and reverse-within-length) stacks → masked pooling → head → softmax."""
    config = model.config
    g = GraphBuilder(f"seqserve_{config.cell}_classifier")
    input_ids, mask = _classifier_inputs(g)
    lengths = g.op(
        "Cast",
        [g.op("ReduceSum", [mask, g.const([1])], "lengths64", keepdims=0)],
        "lengths",
        to=onnx.TensorProto.INT32,
    )
    embedding = g.weight("embedding.weight", numpy_params(model.embedding)["weight"])
    x = g.op(
        "Transpose",
        [g.op("Gather", [embedding, input_ids], "embedding", axis=0)],
        "time_major",
        perm=[1, 0, 2],
    )
    stacks = [_run_stack(g, x, model.forward_layers, "forward_layers", config.cell, lengths, "forward")]
    if config.bidirectional:
        stacks.append(
            _run_stack(g, x, model.backward_layers, "backward_layers", config.cell, lengths, "reverse")
        )
    if config.pooling == "last":
        # Y_h is each row's state after its last real token; in reverse, after position 0.
        finals = [final for _, final in stacks]
        pooled = g.op("Concat", finals, "pooled", axis=-1) if len(finals) > 1 else finals[0]
        return _finish(g, pooled, model.head, config.num_labels)
    outputs = [out for out, _ in stacks]
    time_major = g.op("Concat", outputs, "outputs", axis=-1) if len(outputs) > 1 else outputs[0]
    y = g.op("Transpose", [time_major], "batch_major", perm=[1, 0, 2])
    keep = g.op(
        "Unsqueeze", [g.op("Cast", [mask], "mask_bool", to=onnx.TensorProto.BOOL), g.const([2])], "keep"
    )
    if config.pooling == "max":
        floor = g.const(np.float32(FLOAT_MIN), "float32")
        masked = g.op("Where", [keep, y, floor], "masked")
        pooled = g.op("ReduceMax", [masked, g.const([1])], "pooled", keepdims=0)
    else:
        zero = g.const(np.float32(0.0), "float32")
        total = g.op(
            "ReduceSum", [g.op("Where", [keep, y, zero], "masked"), g.const([1])], "summed", keepdims=0
        )
        count = g.op(
            "Cast",
            [g.op("Max", [lengths, g.const(1, "int32")], "count")],
            "count_f",
            to=onnx.TensorProto.FLOAT,
        )
        pooled = g.op("Div", [total, g.op("Unsqueeze", [count, g.const([1])], "count_col")], "pooled")
    return _finish(g, pooled, model.head, config.num_labels)
