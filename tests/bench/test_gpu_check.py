"""`make gpu-check` (bench/gpu_check) on a machine without a GPU: it must stop at once with a clear
reason and install nothing; its CPU dry run must go through every step and write the report; and the
pieces that read nvidia-smi, the optimized graph and the results must judge them right."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.gpu_check import environment, preflight, report
from bench.gpu_check.steps.engines import first_divergence
from bench.gpu_check.steps.placement import kv_memcpy_nodes
from harness.server_process import REPO_ROOT
from service.engine.placement import GraphNode

SMI_BANNER = """
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 580.159.03             Driver Version: 580.159.03     CUDA Version: 13.0     |
+-----------------------------------------------------------------------------------------+
"""
SMI_LIST = "GPU 0: NVIDIA H200 (UUID: GPU-5e3c0f0e-1c2d-4b7a-9a55-0123456789ab)\n"


def test_without_a_gpu_it_stops_before_installing_anything(tmp_path: Path) -> None:
    venv, out = tmp_path / "venv", tmp_path / "out"
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    command = [sys.executable, "-m", "bench.gpu_check", "--venv", str(venv), "--out", str(out)]
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=REPO_ROOT, env={"PATH": str(empty_path)}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "GPU CHECK FAILED before installing anything: no GPU: nvidia-smi is not on PATH" in done.stderr
    assert not venv.exists() and not out.exists()
    assert time.monotonic() - started < 30


def test_nvidia_smi_output_is_read_for_the_gpus_and_the_drivers_cuda() -> None:
    assert preflight.driver_cuda_version(SMI_BANNER) == (13, 0)
    assert preflight.driver_cuda_version("no banner") is None
    assert preflight.gpu_names(SMI_LIST) == ["NVIDIA H200"]
    assert preflight.gpu_names("No devices were found\n") == []
    assert preflight.python_problem((3, 10)) is not None and preflight.python_problem((3, 12)) is None


def test_the_cuda_wheels_are_asked_for_only_when_the_machine_lacks_cuda_13(tmp_path: Path) -> None:
    cache = "\n".join(f"\t{lib} (libc6,x86-64) => /usr/lib/{lib}" for lib in environment.CUDA_LIBRARIES)
    assert environment.missing_cuda_libraries(cache) == []
    assert environment.missing_cuda_libraries("") == list(environment.CUDA_LIBRARIES)
    (tmp_path / "libcudnn.so.9").touch()
    assert "libcudnn.so.9" not in environment.missing_cuda_libraries("", str(tmp_path))
    with_wheels, without = environment.requirements(True), environment.requirements(False)
    assert "onnxruntime-gpu[cuda,cudnn]==1.31.1" in with_wheels and "onnxruntime-gpu==1.31.1" in without
    assert not any(r.startswith("onnxruntime==") for r in with_wheels + without)
    assert any(r.startswith("onnxruntime-genai-cuda==") for r in without)


def _graph_with_copies() -> list[GraphNode]:
    """GroupQueryAttention fed by a copy of the past keys, plus a copy of the positions."""
    return [
        GraphNode("copy_kv", "MemcpyToHost", "", ("past_key_values.0.key",), ("past_key_CPU",)),
        GraphNode("copy_positions", "MemcpyFromHost", "", ("position_ids",), ("position_ids_CUDA",)),
        GraphNode(
            "attention",
            "GroupQueryAttention",
            "com.microsoft",
            ("q", "k", "v", "past_key_CPU", "past_value", "seqlens", "total"),
            ("out", "present_key", "present_value"),
        ),
    ]


def test_a_memcpy_that_carries_the_kv_cache_is_told_from_one_that_does_not() -> None:
    assert kv_memcpy_nodes(_graph_with_copies()) == ["copy_kv"]


def test_first_divergence() -> None:
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2


def test_targets_are_met_missed_or_not_measured_and_a_failed_step_is_named(tmp_path: Path) -> None:
    steps = {
        "placement": {"status": "ok", "result": {"gpt": {"kv_copies_per_step": 0}, "lstm": {}}},
        "throughput": {"status": "ok", "result": {"seqserve_over_genai": {"1": 1.2, "8": 0.9, "128": 0.5}}},
        "ceiling": {"status": "failed", "error": "ran past its 180 s limit"},
        "parity": {
            "status": "ok",
            "result": {"new_tokens": 96, "target_tokens": 64, "models": {"gpt": {"earliest": 70}}},
        },
    }
    by_measure = {t["measure"].split(" ")[0]: t for t in report.targets(steps)}
    assert by_measure["host↔device"]["status"] == "met"
    assert by_measure["seqserve"]["status"] == "missed" and "128" not in by_measure["seqserve"]["value"]
    assert by_measure["service"]["status"] == "not measured"
    assert by_measure["greedy"]["status"] == "met"
    results = {
        "meta": {
            "command": "x",
            "provider": "cuda",
            "quick": False,
            "machine": "m",
            "started": "t",
            "seconds": 5,
        },
        "steps": {"device": {"status": "ok", "result": {}}, "ceiling": steps["ceiling"]},
    }
    json_path, md_path = report.write(results, tmp_path)
    assert json.loads(json_path.read_text())["targets"][2]["status"] == "not measured"
    assert "ran past its 180 s limit" in md_path.read_text()


@pytest.mark.slow
def test_the_cpu_dry_run_goes_through_every_step_and_writes_the_report(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "bench.gpu_check",
        "--provider",
        "cpu",
        "--quick",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "gpu.json").read_text())
    assert {name: s["status"] for name, s in results["steps"].items()} == dict.fromkeys(
        ("device", "placement", "parity", "throughput", "ceiling", "classifier"), "ok"
    )
    assert [t["status"] in ("met", "missed") for t in results["targets"]] == [True] * 4
    placed = results["steps"]["placement"]["result"]["shakespeare-gpt"]
    assert placed["kv_copies_per_step"] == 0 and placed["memcpy_per_decode_step"] == 0
    assert set(placed["nodes_by_provider"]) == {"CPUExecutionProvider"}
    # genai, given the same graph through the written genai_config.json, computes seqserve's tokens.
    assert results["steps"]["throughput"]["result"]["genai_vs_seqserve_first_divergence_32_tokens"] is None
    assert "(dry run: not the GPU figures)" in (tmp_path / "gpu.md").read_text()
