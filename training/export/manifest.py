"""manifest.json: the one document the service reads about a model (docs/artifact-contract.md).

Every field here is part of the contract; the service refuses a model whose files do not match the
sha256 recorded under `files`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import torch
from tokenizers import Tokenizer

from training.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, tokenizer_kind

MANIFEST_FILE = "manifest.json"
SCHEMA_VERSION = 1
_DTYPE_NAMES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
}


def file_record(path: Path) -> dict[str, Any]:
    """sha256 and size of one file, streamed so large models need no memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"sha256": digest.hexdigest(), "bytes": path.stat().st_size}


def _value_info(values: Any) -> dict[str, dict[str, Any]]:
    described = {}
    for value in values:
        tensor = value.type.tensor_type
        shape = [dim.dim_param if dim.dim_param else dim.dim_value for dim in tensor.shape.dim]
        described[value.name] = {"dtype": _DTYPE_NAMES[tensor.elem_type], "shape": shape}
    return described


def onnx_section(
    model: onnx.ModelProto,
    file: str,
    kv_cache: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Input and output names, dtypes and shapes as written in the graph, plus the cache or state geometry."""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {
        "file": file,
        "opset": opset,
        "inputs": _value_info(model.graph.input),
        "outputs": _value_info(model.graph.output),
        "kv_cache": kv_cache,
        "state": state,
    }


def tokenizer_section(tokenizer_path: Path, file: str, append_eos: bool) -> dict[str, Any]:
    """Kind, size and the contract's special ids, read back from the tokenizer itself."""
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    return {
        "file": file,
        "kind": tokenizer_kind(tokenizer),
        "vocab_size": tokenizer.get_vocab_size(),
        "pad_id": PAD_ID,
        "bos_id": BOS_ID,
        "eos_id": EOS_ID,
        "unk_id": UNK_ID,
        "append_eos": append_eos,
    }


def training_section(
    config: str | None, data: list[str], steps: int | None, seconds: float | None
) -> dict[str, Any]:
    """Where the model came from, with the library versions that produced and checked the artifact."""
    return {
        "config": config,
        "data": list(data),
        "steps": steps,
        "seconds": seconds,
        "torch_version": torch.__version__.split("+")[0],
        "onnx_version": onnx.__version__,
        "onnxruntime_version": onnxruntime.__version__,
    }


def preprocessing_section(
    max_tokens: int,
    truncation: str,
    long_documents: str,
    window_stride: int,
    pooling: str,
    selection: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A classifier's input policy, exactly as training evaluated it (docs/artifact-contract.md):
    `max_tokens` per input (an appended EOS included), how a longer text is cut or windowed, and how
    window log-probabilities are pooled. `window_stride` is resolved to tokens."""
    return {
        "max_tokens": max_tokens,
        "truncation": truncation,
        "long_documents": long_documents,
        "window_stride": window_stride,
        "pooling": pooling,
        **({"selection": selection} if selection else {}),
    }


def chat_section(template_path: Path | None, stop: list[str]) -> dict[str, Any] | None:
    """The manifest's `chat`: the Jinja template's text (the service renders it, sandboxed) and the stop
    strings a chat request gets when it names none. None for a model without a template."""
    if template_path is None:
        return None
    return {"template": Path(template_path).read_text(encoding="utf-8"), "stop": list(stop)}


def write_preprocessing_section(folder: Path, preprocessing: dict[str, Any]) -> Path:
    """Set a published classifier's `preprocessing` without exporting it again (the manifest is not
    hashed): how the committed models received the input policy they had been evaluated under."""
    path = folder / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    ordered: dict[str, Any] = {}
    for key, value in manifest.items():
        if key != "preprocessing":
            ordered[key] = value
        if key == "labels":
            ordered["preprocessing"] = preprocessing
    return write_manifest(folder, ordered)


def write_chat_section(folder: Path, chat: dict[str, Any] | None) -> Path:
    """Set (or remove) the `chat` of an exported model's manifest without exporting it again: the
    manifest is not hashed, so the graph and the tokenizer stay as they are."""
    path = folder / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    fields = {key: value for key, value in manifest.items() if key != "chat"}
    ordered = {}
    for key, value in fields.items():
        ordered[key] = value
        if key == "labels" and chat is not None:
            ordered["chat"] = chat
    return write_manifest(folder, ordered)


def build_manifest(
    *,
    name: str,
    task: str,
    architecture: str,
    parameters: int,
    context_length: int | None,
    onnx_info: dict[str, Any],
    tokenizer_info: dict[str, Any],
    labels: list[str] | None,
    metrics: dict[str, Any],
    training: dict[str, Any],
    folder: Path,
    chat: dict[str, Any] | None = None,
    preprocessing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The full manifest; `files` hashes every other file already written in `folder`."""
    files = {
        path.name: file_record(path)
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != MANIFEST_FILE
    }
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "task": task,
        "architecture": architecture,
        "parameters": parameters,
        "context_length": context_length,
        "onnx": onnx_info,
        "tokenizer": tokenizer_info,
        "labels": labels,
        **({"preprocessing": preprocessing} if preprocessing is not None else {}),
        **({"chat": chat} if chat is not None else {}),
        "metrics": metrics,
        "training": training,
        "files": files,
    }
    return manifest


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Written to a temporary file and renamed over the old one: an interrupted write leaves the old
    manifest whole, never a truncated file the service would refuse."""
    path = folder / MANIFEST_FILE
    staging = path.with_name(f".{MANIFEST_FILE}.tmp")
    staging.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(staging, path)
    return path
