"""The placement report the GPU check prints: providers per node and the Memcpy nodes ORT inserted."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from service.engine.placement import graph_nodes, memcpy_nodes, placement_report


@pytest.mark.parametrize("kind", ["llama", "lstm", "transformer_classifier"])
def test_on_the_cpu_every_node_is_cpu_and_nothing_is_copied(tiny_model, kind: str, tmp_path: Path) -> None:
    report = placement_report(tiny_model(kind), "cpu", workdir=tmp_path)
    assert report.provider == "cpu" and report.session_providers == ["CPUExecutionProvider"]
    assert report.nodes and report.nodes_by_provider == {"CPUExecutionProvider": len(report.nodes)}
    assert report.nodes_off_provider == []
    assert report.memcpy_nodes == [] and report.memcpy_per_decode_step == 0
    summary = report.to_dict()
    assert (summary["memcpy_to_host"], summary["memcpy_from_host"]) == (0, 0)
    # The optimized graph really was written and read: its nodes are the ones the profile ran.
    optimized = next(tmp_path.glob("*.optimized.onnx"))
    ran = {n.op_type for n in report.nodes}
    assert ran <= {n.op_type for n in graph_nodes(optimized)}


def test_the_decoder_report_sees_its_attention_nodes(tiny_model) -> None:
    report = placement_report(tiny_model("llama"), "cpu")
    attention = [n for n in report.nodes if n.op_type == "GroupQueryAttention"]
    assert len(attention) == 2 and {n.provider for n in attention} == {"CPUExecutionProvider"}


def test_the_graph_reader_agrees_with_onnx_and_finds_memcpy_nodes_on_the_cache(tmp_path: Path) -> None:
    """A graph shaped like what ORT writes when attention falls back to the CPU under CUDA."""
    cache = helper.make_tensor_value_info("past_key_values.0.key", TensorProto.FLOAT, [1, 2, 8, 4])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 4])
    nodes = [
        helper.make_node("MemcpyToHost", ["past_key_values.0.key"], ["k_host"], name="Memcpy_token_0"),
        helper.make_node("Relu", ["k_host"], ["k_relu"], name="relu"),
        helper.make_node("MemcpyFromHost", ["k_relu"], ["y"], name="Memcpy_token_1"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [cache], [out]))
    path = tmp_path / "optimized.onnx"
    onnx.save(model, path)
    read = graph_nodes(path)
    assert [(n.name, n.op_type, n.inputs, n.outputs) for n in read] == [
        (n.name, n.op_type, tuple(n.input), tuple(n.output)) for n in onnx.load(path).graph.node
    ]
    assert [n.op_type for n in memcpy_nodes(path)] == ["MemcpyToHost", "MemcpyFromHost"]
