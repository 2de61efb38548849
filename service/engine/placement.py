"""Where ORT put each node of a model, and how many host<->device copies it inserted.

Why: under the CUDA provider, any node whose kernel lacks the graph's types (GroupQueryAttention
takes only float16/bfloat16 on CUDA) runs on the CPU, and ORT silently wraps it in `MemcpyToHost` /
`MemcpyFromHost` nodes. For a decoder that means the KV cache crossing PCIe at every step. Two ORT
outputs tell the truth, and this module reads both:
- the optimized graph (`SessionOptions.optimized_model_filepath`) holds the Memcpy nodes ORT added;
- the profile (`SessionOptions.enable_profiling`) names the provider that ran each node.
The graph is read with a small protobuf walker (the service does not depend on the `onnx` package).
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.engine.manifest import read_manifest
from service.engine.runtime import ModelSession, open_variant_session

MEMCPY_OPS = ("MemcpyToHost", "MemcpyFromHost")
_CACHE_PREFIXES = ("past_key_values.", "present.", "state_h", "state_c")


@dataclass(frozen=True)
class GraphNode:
    name: str
    op_type: str
    domain: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class NodePlacement:
    name: str
    op_type: str
    provider: str


@dataclass
class PlacementReport:
    """Per-model facts for the GPU check: providers, node placement, the copies ORT inserted."""

    model: str
    variant_file: str
    provider: str  # the provider really in use, "cpu" or "cuda"
    session_providers: list[str]
    nodes: list[NodePlacement]
    memcpy_nodes: list[GraphNode]  # in the optimized graph
    memcpy_per_decode_step: int  # Memcpy node executions inside the last profiled run
    state_memcpy_nodes: list[GraphNode] = field(default_factory=list)  # those touching KV cache / RNN state

    @property
    def nodes_by_provider(self) -> dict[str, int]:
        return dict(Counter(n.provider for n in self.nodes))

    @property
    def nodes_off_provider(self) -> list[NodePlacement]:
        """Compute nodes that did not run on the session's main provider (Memcpy excluded)."""
        main = self.session_providers[0]
        return [n for n in self.nodes if n.provider != main and n.op_type not in MEMCPY_OPS]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for bench/results/gpu.json."""
        return {
            "model": self.model,
            "variant_file": self.variant_file,
            "provider": self.provider,
            "session_providers": self.session_providers,
            "nodes_by_provider": self.nodes_by_provider,
            "nodes_off_provider": [asdict(n) for n in self.nodes_off_provider],
            "memcpy_nodes": [{"name": n.name, "op_type": n.op_type} for n in self.memcpy_nodes],
            "memcpy_to_host": sum(n.op_type == "MemcpyToHost" for n in self.memcpy_nodes),
            "memcpy_from_host": sum(n.op_type == "MemcpyFromHost" for n in self.memcpy_nodes),
            "state_memcpy_nodes": [n.name for n in self.state_memcpy_nodes],
            "memcpy_per_decode_step": self.memcpy_per_decode_step,
        }


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one protobuf message; length-delimited values as bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def graph_nodes(model_path: Path) -> list[GraphNode]:
    """The top-level graph's nodes of an ONNX file (ModelProto.graph=7, GraphProto.node=1,
    NodeProto input=1, output=2, name=3, op_type=4, domain=7)."""
    data = Path(model_path).read_bytes()
    graph = next((v for n, w, v in _fields(data) if n == 7 and w == 2), b"")
    nodes = []
    for number, wire, raw in _fields(graph):
        if number != 1 or wire != 2:
            continue
        parts: dict[int, list[str]] = {1: [], 2: [], 3: [], 4: [], 7: []}
        for n, w, v in _fields(raw):
            if w == 2 and n in parts:
                parts[n].append(v.decode())
        nodes.append(
            GraphNode(
                name=(parts[3] or [""])[0],
                op_type=(parts[4] or [""])[0],
                domain=(parts[7] or [""])[0],
                inputs=tuple(parts[1]),
                outputs=tuple(parts[2]),
            )
        )
    return nodes


def memcpy_nodes(optimized_model_path: Path) -> list[GraphNode]:
    """The MemcpyToHost/MemcpyFromHost nodes ORT inserted between providers."""
    return [n for n in graph_nodes(optimized_model_path) if n.op_type in MEMCPY_OPS]


def profile_placement(profile_path: Path) -> tuple[list[NodePlacement], int]:
    """Each profiled node with its provider (first run that executed it), and the number of Memcpy
    node executions inside the LAST model run of the profile (the caller makes that a decode step)."""
    events = json.loads(Path(profile_path).read_text())
    node_events = [e for e in events if e.get("cat") == "Node" and "provider" in e.get("args", {})]
    seen: dict[str, NodePlacement] = {}
    for event in node_events:
        name = event["name"].removesuffix("_kernel_time")
        if name not in seen:
            seen[name] = NodePlacement(name, event["args"].get("op_name", ""), event["args"]["provider"])
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    last_step = 0
    if runs:
        start = runs[-1]["ts"]
        end = start + runs[-1]["dur"]
        last_step = sum(
            1 for e in node_events if e["args"].get("op_name") in MEMCPY_OPS and start <= e["ts"] <= end
        )
    return list(seen.values()), last_step


def _drive_one_step(model_dir: Path, session: ModelSession) -> None:
    """Run what the service runs: a prefill then a decode step (generation), or one batch (classifier).
    The decode step is the last run, so the profile's last model_run is one decode step."""
    from service.engine.loader import build_runner  # loader imports the runners; keep this module light

    manifest = read_manifest(model_dir)
    if manifest.task == "classify":
        ids = np.full((2, 8), int(manifest.tokenizer.get("pad_id", 0)) + 4, dtype=np.int64)
        session.run({"input_ids": ids, "attention_mask": np.ones_like(ids)})
        return
    runner = build_runner(manifest, session, max_slots=2)
    prompt = np.arange(4, 12, dtype=np.int64)
    runner.prefill([0, 1], [prompt, prompt], [False, False])
    runner.decode(np.array([0, 1]), np.array([4, 5], dtype=np.int64))


def placement_report(
    model_dir: Path, provider: str = "cpu", workdir: Path | None = None, intra_op_threads: int = 1
) -> PlacementReport:
    """Open the model as the service would (variant chosen by the provider really in use) with the
    optimized graph saved and the profiler on, run a prefill and one decode step (or one classifier
    batch), and report providers, per-node placement and Memcpy nodes.

    `workdir` keeps `optimized.onnx` and the profile JSON for inspection; a temporary folder otherwise.
    """
    model_dir = Path(model_dir)
    with tempfile.TemporaryDirectory(prefix="placement-") as scratch:
        folder = Path(workdir) if workdir is not None else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        optimized = folder / f"{model_dir.name}.{provider}.optimized.onnx"
        manifest = read_manifest(model_dir)
        session = open_variant_session(
            manifest,
            provider,
            intra_op_threads,
            optimized_model_path=optimized,
            profile_prefix=folder / f"{model_dir.name}.{provider}.profile",
        )
        _drive_one_step(model_dir, session)
        profile = Path(session.session.end_profiling())
        nodes, per_step = profile_placement(profile)
        copies = memcpy_nodes(optimized)
        return PlacementReport(
            model=manifest.name,
            variant_file=session.model_path.name,
            provider=session.provider,
            session_providers=list(session.session.get_providers()),
            nodes=nodes,
            memcpy_nodes=copies,
            memcpy_per_decode_step=per_step,
            state_memcpy_nodes=[
                n for n in copies if any(t.startswith(_CACHE_PREFIXES) for t in (*n.inputs, *n.outputs))
            ],
        )
