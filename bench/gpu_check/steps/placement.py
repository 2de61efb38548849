"""Per model: where each node runs, and what crosses between host and device in one decode step.

service.engine.placement's report does the measuring: the model opened as the service opens it,
its optimized graph saved (the Memcpy nodes ORT inserted between providers) and an ORT profile of
a prefill and one decode step through the engine's own runner (the provider of every node, the
Memcpy executions of that step). On top of it, issue 13's first target, the KV cache's copies:
- a Memcpy node on a GroupQueryAttention's past or present tensor, or on the graph's
  past_key_values.* / present.* (each runs once per step);
- a cache bound on one device while attention runs on the other: ORT then copies past in and
  present out, for keys and values of every layer, at every step, through the binding itself, which
  leaves no Memcpy node to see. The runner binds its cache on the session's device.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from bench.gpu_check.models import exported_models
from bench.gpu_check.steps.context import StepContext
from service.engine.manifest import read_manifest
from service.engine.placement import MEMCPY_OPS, GraphNode, PlacementReport, graph_nodes, placement_report

KV_PREFIXES = ("past_key_values.", "present.")


def kv_memcpy_nodes(nodes: list[GraphNode]) -> list[str]:
    """Names of the Memcpy nodes that carry a KV cache tensor."""
    kv_tensors: set[str] = set()
    for node in nodes:
        if node.op_type == "GroupQueryAttention":
            kv_tensors.update(t for t in (*node.inputs[3:5], *node.outputs[1:3]) if t)
    return [
        n.name
        for n in nodes
        if n.op_type in MEMCPY_OPS
        and any(t in kv_tensors or t.startswith(KV_PREFIXES) for t in (*n.inputs, *n.outputs))
    ]


def kv_copies(report: PlacementReport, nodes: list[GraphNode], num_layers: int) -> dict[str, Any]:
    attention = sorted({n.provider for n in report.nodes if n.op_type == "GroupQueryAttention"})
    attention_devices = {"cuda" if p == "CUDAExecutionProvider" else "cpu" for p in attention}
    binding = 0 if attention_devices == {report.provider} else 4 * num_layers
    memcpy = kv_memcpy_nodes(nodes)
    return {
        "kv_cache_device": report.provider,
        "attention_providers": attention,
        "kv_memcpy_nodes": memcpy,
        "kv_binding_copies_per_step": binding,
        "kv_copies_per_step": len(memcpy) + binding,
    }


def model_report(name: str, folder: Path, ctx: StepContext) -> dict[str, Any]:
    report = placement_report(folder, ctx.provider, workdir=ctx.work, intra_op_threads=ctx.threads)
    summary = report.to_dict()
    summary["off_device_ops"] = dict(Counter(n.op_type for n in report.nodes_off_provider))
    manifest = read_manifest(folder, verify=False)
    kv = manifest.variant(report.provider).kv_cache
    if kv:
        optimized = ctx.work / f"{folder.name}.{ctx.provider}.optimized.onnx"
        summary |= kv_copies(report, graph_nodes(optimized), int(kv["num_layers"]))
    return summary


def run(ctx: StepContext) -> dict[str, Any]:
    results = {}
    for name, folder in exported_models().items():
        r = results[name] = model_report(name, folder, ctx)
        print(
            f"{name}: {r['variant_file']} on {r['provider']}, {r['nodes_by_provider']}, "
            f"{len(r['memcpy_nodes'])} Memcpy nodes in the graph, {r['memcpy_per_decode_step']} in a step"
            + (f", KV copies per step {r['kv_copies_per_step']}" if "kv_copies_per_step" in r else ""),
            flush=True,
        )
    return results
