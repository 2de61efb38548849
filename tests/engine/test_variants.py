"""Variant choice: the service loads the graph that matches the provider really in use."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from harness.tiny_models import make_variants_model_dir
from service.engine import ManifestError, ModelIntegrityError, read_manifest, runtime
from service.engine.loader import build_runner, kv_cache_dtype
from service.engine.runtime import open_variant_session


@pytest.fixture(scope="module")
def variants_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_variants_model_dir(tmp_path_factory.mktemp("variants"))


def cuda_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "CUDA" in r.getMessage()
    ]


def test_manifest_variants_resolve_per_provider(variants_dir: Path) -> None:
    manifest = read_manifest(variants_dir)
    assert (manifest.variant("cpu").file, manifest.variant("cpu").kv_cache_dtype) == ("model.onnx", "float32")
    cuda = manifest.variant("cuda")
    assert (cuda.file, cuda.kv_cache_dtype, cuda.input_dtype("past_key_values.0.key")) == (
        "model.cuda.onnx",
        "int8",
        "int8",
    )
    assert cuda.kv_cache["dtype"] == "int8" and manifest.variant("cpu").kv_cache["dtype"] == "float32"


def test_without_variants_every_provider_gets_the_top_level_graph(tiny_model) -> None:
    manifest = read_manifest(tiny_model("llama"))
    assert manifest.variant("cuda").file == manifest.variant("cpu").file == manifest.onnx["file"]


CPU_BUILD = pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="needs onnxruntime's CPU build"
)


@CPU_BUILD
def test_cuda_asked_on_a_cpu_build_serves_the_cpu_variant_with_one_warning(
    variants_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manifest = read_manifest(variants_dir)
    with caplog.at_level(logging.INFO, logger="service.engine.runtime"):
        session = open_variant_session(manifest, "cuda", intra_op_threads=1)
    assert session.provider == "cpu" and session.model_path.name == "model.onnx"
    assert kv_cache_dtype(manifest, session) == "float32"
    warnings = cuda_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "no CUDAExecutionProvider" in warnings[0] and "CPU variant model.onnx" in warnings[0]


@CPU_BUILD
def test_a_cuda_session_that_comes_back_on_the_cpu_is_replaced_by_the_cpu_variant(
    variants_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where ORT lists CUDA but the session does not get it (a GPU build on a machine without a
    usable GPU), the CUDA variant's session is really opened, found on the CPU, and dropped."""
    monkeypatch.setattr(
        runtime.ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    manifest = read_manifest(variants_dir)
    with caplog.at_level(logging.INFO, logger="service.engine.runtime"), pytest.warns(UserWarning):
        session = open_variant_session(manifest, "cuda", intra_op_threads=1)
    assert session.provider == "cpu" and session.model_path.name == "model.onnx"
    warnings = cuda_warnings(caplog)
    assert (
        len(warnings) == 1
        and "model.cuda.onnx came back with providers ['CPUExecutionProvider']" in warnings[0]
    )


@CPU_BUILD
def test_the_cpu_variant_is_served_through_the_engine(variants_dir: Path) -> None:
    manifest = read_manifest(variants_dir)
    session = open_variant_session(manifest, "cuda", intra_op_threads=1)
    runner = build_runner(manifest, session, max_slots=2)
    assert runner.cache.keys[0].dtype == np.float32
    logits = runner.prefill([0], [np.arange(4, 10)], [False])[0]
    assert logits.shape == (1, runner.vocab_size) and np.isfinite(logits).all()


def test_a_manifest_dtype_that_contradicts_the_graph_refuses_the_model(
    variants_dir: Path, tmp_path: Path
) -> None:
    raw = json.loads((variants_dir / "manifest.json").read_text())
    raw["variants"]["cpu"]["inputs"]["past_key_values.0.key"]["dtype"] = "float16"
    folder = tmp_path / "lying"
    folder.mkdir()
    for name in ("model.onnx", "model.cuda.onnx", "tokenizer.json"):
        (folder / name).symlink_to(variants_dir / name)
    (folder / "manifest.json").write_text(json.dumps(raw))
    manifest = read_manifest(folder)
    session = open_variant_session(manifest, "cpu", intra_op_threads=1)
    with pytest.raises(ManifestError, match=r"float16 but model\.onnx declares float32"):
        build_runner(manifest, session, max_slots=1)


def test_a_variant_file_without_a_hash_is_refused(variants_dir: Path, tmp_path: Path) -> None:
    raw = json.loads((variants_dir / "manifest.json").read_text())
    del raw["files"]["model.cuda.onnx"]
    folder = tmp_path / "unhashed"
    folder.mkdir()
    for name in ("model.onnx", "model.cuda.onnx", "tokenizer.json"):
        (folder / name).symlink_to(variants_dir / name)
    (folder / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ModelIntegrityError, match=r"model\.cuda\.onnx has no sha256"):
        read_manifest(folder)


def test_unknown_providers_in_variants_are_refused(variants_dir: Path, tmp_path: Path) -> None:
    raw = json.loads((variants_dir / "manifest.json").read_text())
    raw["variants"]["tpu"] = {"file": "model.onnx"}
    folder = tmp_path / "tpu"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match=r"variants\.tpu: unknown provider"):
        read_manifest(folder, verify=False)
