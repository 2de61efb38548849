"""Per model: where each node runs, and what crosses between host and device in one decode step.

Each model's variant for the provider is opened as the service opens it (service.engine.runtime's
ModelSession, the engine's own runner and bindings), but through a session that also saves its
optimized graph and writes an ORT profile. Two sources, because each sees what the other cannot:
- the optimized graph holds the Memcpy nodes ORT inserted between providers, with tensor names, so a
  copy can be traced to the KV cache (a GroupQueryAttention's past/present, or the graph's
  past_key_values.*/present.*);
- the profile of the last decode step says which provider ran each node, and which Memcpy nodes ran
  in that step, with their sizes.
A KV cache that lives on one device while attention runs on the other is copied through the binding
(past in, present out) every step without any Memcpy node: counted too, from the runner's buffers.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from bench.gpu_check.steps.context import StepContext
from bench.gpu_check.variants import exported_models, variant_file
from service.engine.loader import build_runner
from service.engine.manifest import read_manifest
from service.engine.runtime import ModelSession

MEMCPY = ("MemcpyToHost", "MemcpyFromHost")
KV_PREFIXES = ("past_key_values.", "present.")
STATE_NAMES = ("state_h", "state_c", "state_h_out", "state_c_out")


def _profiled_session(
    path: Path, providers: list[str], threads: int, work: Path, name: str
) -> ort.InferenceSession:
    """ModelSession's options plus the saved optimized graph and profiling."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(work / f"{name}.optimized.onnx")
    options.log_severity_level = 3  # not the warning that an ENABLE_ALL graph is machine-specific
    options.enable_profiling = True
    options.profile_file_prefix = str(work / f"{name}.profile")
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def memcpy_nodes(graph: onnx.GraphProto) -> list[dict[str, Any]]:
    """The optimized graph's Memcpy nodes, each marked `kv` when it carries a KV cache tensor and
    `state` when it carries a recurrent state tensor."""
    kv_tensors: set[str] = set()
    for node in graph.node:
        if node.op_type == "GroupQueryAttention":
            kv_tensors.update(n for n in list(node.input[3:5]) + list(node.output[1:3]) if n)
    found = []
    for node in graph.node:
        if node.op_type not in MEMCPY:
            continue
        tensors = [*node.input, *node.output]
        found.append(
            {
                "name": node.name,
                "op": node.op_type,
                "tensors": tensors,
                "kv": any(t in kv_tensors or t.startswith(KV_PREFIXES) for t in tensors),
                "state": any(t.split("_CUDA")[0] in STATE_NAMES for t in tensors),
            }
        )
    return found


def last_run_nodes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Node events of the profile's last model_run, in order: {name, op, provider, bytes}."""
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if not runs:
        return []
    start, end = runs[-1]["ts"], runs[-1]["ts"] + runs[-1]["dur"]
    return [
        {
            "name": e["name"].removesuffix("_kernel_time"),
            "op": e["args"].get("op_name", ""),
            "provider": e["args"].get("provider", ""),
            "bytes": int(e["args"].get("output_size", 0) or 0),
        }
        for e in events
        if e.get("cat") == "Node" and start <= e["ts"] <= end and e["name"].endswith("_kernel_time")
    ]


def placement_summary(nodes: list[dict[str, Any]], wanted: str) -> dict[str, Any]:
    by_provider = Counter(n["provider"] for n in nodes)
    off = Counter(n["op"] for n in nodes if n["provider"] != wanted and n["op"] not in MEMCPY)
    return {"nodes_by_provider": dict(by_provider), "off_device_ops": dict(off)}


def _drive(runner: Any, manifest: Any, session: ModelSession) -> None:
    """What a serving step does: a two-row prefill, then three decode steps (the last one profiled)."""
    if manifest.task == "classify":
        ids = np.full((2, 16), 5, dtype=np.int64)
        for _ in range(2):
            session.run({"input_ids": ids, "attention_mask": np.ones_like(ids)})
        return
    prompt = np.arange(4, 20, dtype=np.int64)
    runner.prefill([0, 1], [prompt, prompt[::-1].copy()], [False, False])
    rows = np.array([0, 1])
    for _ in range(3):
        runner.decode(rows, np.array([5, 6], dtype=np.int64))


def model_report(name: str, folder: Path, ctx: StepContext) -> dict[str, Any]:
    path, source = variant_file(folder, ctx.provider)
    manifest = read_manifest(folder)
    session = ModelSession(path, ctx.provider, ctx.threads)
    session.session = _profiled_session(path, ctx.ort_providers, ctx.threads, ctx.work, name)
    runner = None if manifest.task == "classify" else build_runner(manifest, session, 4)
    _drive(runner, manifest, session)
    events = json.loads(Path(session.session.end_profiling()).read_text())
    wanted = session.session.get_providers()[0]
    step = last_run_nodes(events)
    copies = memcpy_nodes(onnx.load(str(ctx.work / f"{name}.optimized.onnx"), load_external_data=False).graph)
    kv_names = {c["name"] for c in copies if c["kv"]}
    state_names = {c["name"] for c in copies if c["state"]}
    step_copies = [n for n in step if n["op"] in MEMCPY]
    report: dict[str, Any] = {
        "file": path.name,
        "chosen_by": source,
        "session_providers": session.session.get_providers(),
        "provider_in_use": session.provider,
        **placement_summary(step, wanted),
        "memcpy_nodes_in_graph": len(copies),
        "memcpy_nodes": copies,
        "step": "one decode step of 2 rows" if runner is not None else "one classifier run of 2 texts",
        "copies_per_step": len(step_copies),
        "copy_bytes_per_step": sum(n["bytes"] for n in step_copies),
    }
    kv = manifest.onnx.get("kv_cache")
    if kv and runner is not None:
        attention = {n["provider"] for n in step if n["op"] == "GroupQueryAttention"}
        cache_device = runner.cache.keys[0].device
        attention_device = {"cuda" if p == "CUDAExecutionProvider" else "cpu" for p in attention}
        # Past in and present out, keys and values, every layer: the binding copies them when the
        # cache and the attention kernel are on different devices.
        binding = 0 if attention_device == {cache_device} else 4 * int(kv["num_layers"])
        report |= {
            "kv_cache_device": cache_device,
            "attention_providers": sorted(attention),
            "kv_memcpy_per_step": sum(n["name"] in kv_names for n in step_copies),
            "kv_binding_copies_per_step": binding,
        }
        report["kv_copies_per_step"] = report["kv_memcpy_per_step"] + binding
    if manifest.onnx.get("state"):
        report["state_memcpy_per_step"] = sum(n["name"] in state_names for n in step_copies)
        # State rows held in host memory cross to the device and back at every step on CUDA.
        on_host = isinstance(getattr(runner.state, "h", None), np.ndarray)
        report["state_device"] = "cpu" if on_host else session.device
    return report


def run(ctx: StepContext) -> dict[str, Any]:
    results = {}
    for name, folder in exported_models().items():
        results[name] = model_report(name, folder, ctx)
        r = results[name]
        print(
            f"{name}: {r['nodes_by_provider']}, {r['memcpy_nodes_in_graph']} Memcpy nodes in the graph, "
            f"{r['copies_per_step']} copies in {r['step']}"
            + (f", KV copies per step {r['kv_copies_per_step']}" if "kv_copies_per_step" in r else ""),
            flush=True,
        )
    return results
