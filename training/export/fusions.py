"""Graph passes that fuse what onnxruntime-genai's builder emits fused: the residual Add + RMSNorm pair.

Why: in a pre-norm block every `x = x + sublayer; normed = RMSNorm(x)` is two kernels and two passes
over the activations; ORT's com.microsoft.SkipSimplifiedLayerNormalization does both in one and also
returns the sum for the next residual. onnxruntime's load-time optimizer does not make this fusion
for a graph built node by node, so the export makes it (as genai's graph has it).
"""

from __future__ import annotations

import copy
from collections import defaultdict

import onnx

from training.export.onnx_graph import MS_DOMAIN

SKIP_NORM = "SkipSimplifiedLayerNormalization"


def fuse_skip_rmsnorm(graph: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(copy with every Add feeding a SimplifiedLayerNormalization fused, number fused).

    The fused node's 4th output (input + skip) takes the Add's output name, so the next residual
    Add reads it unchanged. Only Adds of two activations (no initializer) are fused."""
    model = copy.deepcopy(graph)
    nodes = list(model.graph.node)
    producers = {out: node for node in nodes for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in nodes:
        for name in node.input:
            consumers[name].append(node)
    initializers = {t.name for t in model.graph.initializer}
    replaced: dict[int, onnx.NodeProto] = {}
    removed: set[int] = set()
    for norm in nodes:
        if norm.op_type != "SimplifiedLayerNormalization" or norm.domain not in ("", "ai.onnx"):
            continue
        add = producers.get(norm.input[0])
        if add is None or add.op_type != "Add" or any(i in initializers for i in add.input):
            continue
        epsilon = next(a.f for a in norm.attribute if a.name == "epsilon")
        fused = onnx.helper.make_node(
            SKIP_NORM,
            [add.input[0], add.input[1], norm.input[1]],
            [norm.output[0], "", "", add.output[0]],
            name=f"{norm.name}/skip_fused",
            domain=MS_DOMAIN,
            epsilon=epsilon,
        )
        replaced[id(norm)] = fused
        removed.add(id(add))
    if not replaced:
        return model, 0
    # The fused node stands where the norm stood: after every producer of the Add's inputs.
    ordered = [replaced.get(id(n), n) for n in nodes if id(n) not in removed]
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    return model, len(replaced)
