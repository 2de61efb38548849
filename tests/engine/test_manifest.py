"""Models whose files do not match their manifest are refused with a clear, per-model error."""

import json

import pytest

from service.engine import ManifestError, ModelIntegrityError, read_manifest
from service.engine.manifest import sha256_file


def write_model(folder, **overrides):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(b"not really onnx, only hashed here")
    (folder / "tokenizer.json").write_text("{}")
    files = {n: {"sha256": sha256_file(folder / n), "bytes": 1} for n in ("model.onnx", "tokenizer.json")}
    manifest = {
        "schema_version": 1,
        "name": folder.name,
        "task": "generate",
        "architecture": "llama",
        "context_length": 64,
        "onnx": {
            "file": "model.onnx",
            "kv_cache": {"num_layers": 1, "kv_heads": 1, "head_dim": 4, "max_len": 64},
        },
        "tokenizer": {"file": "tokenizer.json", "vocab_size": 10, "pad_id": 0, "eos_id": 2},
        "labels": None,
        "files": files,
        **overrides,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_matching_files_load(tmp_path):
    manifest = read_manifest(write_model(tmp_path / "good"))
    assert (manifest.name, manifest.task, manifest.vocab_size) == ("good", "generate", 10)
    assert manifest.model_path == tmp_path / "good" / "model.onnx"


def test_a_changed_file_is_refused_naming_the_model_and_file(tmp_path):
    folder = write_model(tmp_path / "tampered")
    (folder / "model.onnx").write_bytes(b"swapped weights")
    with pytest.raises(ModelIntegrityError, match=r"tampered: model\.onnx does not match"):
        read_manifest(folder)


def test_a_missing_file_is_refused(tmp_path):
    folder = write_model(tmp_path / "partial")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelIntegrityError, match=r"tokenizer\.json is missing"):
        read_manifest(folder)


def test_a_manifest_without_hashes_is_refused(tmp_path):
    with pytest.raises(ModelIntegrityError, match="no file hashes"):
        read_manifest(write_model(tmp_path / "unhashed", files={}))


def test_malformed_manifests_raise_manifest_error(tmp_path):
    with pytest.raises(ManifestError, match=r"no manifest\.json"):
        read_manifest(tmp_path)
    with pytest.raises(ManifestError, match="task must be"):
        read_manifest(write_model(tmp_path / "odd", task="translate"))


def test_a_chat_section_is_read_and_a_malformed_one_refuses_the_model(tmp_path):
    chat = {"template": "{{ messages[0].content }}", "stop": ["\n\n"]}
    assert read_manifest(write_model(tmp_path / "chatty", chat=chat)).chat == chat
    assert read_manifest(write_model(tmp_path / "plain")).chat is None
    for i, bad in enumerate([{"template": ""}, {"template": 3}, {"template": "x", "stop": [""]}, "x"]):
        with pytest.raises(ManifestError, match="chat"):
            read_manifest(write_model(tmp_path / f"bad-{i}", chat=bad))
