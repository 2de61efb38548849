"""export_run's artifact folder: exactly the contract's files and manifest fields, with true hashes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import onnx
import onnxruntime
import pytest

from harness.tiny_models import make_tiny_run
from service.engine.manifest import read_manifest
from tests.conftest import REPO_ROOT
from training.export import ParityError, export_run, parity
from training.recipe import ChatConfig, load_recipe, recipe_to_toml

CONTRACT_KEYS = {
    "schema_version", "name", "task", "architecture", "parameters", "context_length", "onnx", "tokenizer",
    "labels", "metrics", "training", "files",
}  # fmt: skip


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.mark.parametrize("kind", ["llama", "lstm", "transformer_classifier"])
def test_artifact_holds_the_three_contract_files_with_their_true_hashes(tiny_model_dir, kind: str) -> None:
    folder = tiny_model_dir(kind)
    manifest = manifest_of(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.onnx", "tokenizer.json"]
    # A classifier run also records the input policy it was evaluated under (docs/artifact-contract.md).
    assert set(manifest) == CONTRACT_KEYS | ({"preprocessing"} if kind.endswith("classifier") else set())
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json"}
    assert read_manifest(folder).name == f"tiny-{kind}"  # the service's own reader accepts it


def test_generator_manifest_describes_graph_cache_tokenizer_and_versions(tiny_model_dir) -> None:
    manifest = manifest_of(tiny_model_dir("llama"))
    graph = onnx.load(str(tiny_model_dir("llama") / "model.onnx"))
    assert manifest["task"] == "generate" and manifest["architecture"] == "llama"
    assert list(manifest["onnx"]["inputs"]) == [i.name for i in graph.graph.input]
    assert list(manifest["onnx"]["outputs"])[:3] == ["logits", "present.0.key", "present.0.value"]
    assert manifest["onnx"]["kv_cache"] == {
        "num_layers": 2,
        "kv_heads": 2,
        "head_dim": 16,
        "max_len": 2048,
        "dtype": "float32",
    }
    assert manifest["onnx"]["state"] is None
    ids = {key: manifest["tokenizer"][key] for key in ("pad_id", "bos_id", "eos_id", "unk_id")}
    assert ids == {"pad_id": 0, "bos_id": 1, "eos_id": 2, "unk_id": 3}
    assert manifest["tokenizer"]["kind"] == "char"
    assert manifest["training"]["onnxruntime_version"] == onnxruntime.__version__
    assert manifest["training"]["onnx_version"] == onnx.__version__
    assert 0.0 <= manifest["metrics"]["parity_max_abs_diff"] <= 1e-4


def test_recurrent_and_classifier_manifests_carry_state_labels_and_eos_flag(tiny_model_dir) -> None:
    lstm = manifest_of(tiny_model_dir("lstm"))
    assert lstm["onnx"]["state"] == {"num_layers": 2, "hidden_size": 64, "cell": "lstm"}
    assert lstm["onnx"]["kv_cache"] is None and lstm["architecture"] == "lstm"
    transformer = manifest_of(tiny_model_dir("transformer_classifier"))
    recurrent = manifest_of(tiny_model_dir("rnn_classifier"))
    for manifest in (transformer, recurrent):
        assert manifest["task"] == "classify"
        assert manifest["labels"] == ["negative", "positive"]
        assert manifest["onnx"]["outputs"] == {"probabilities": {"dtype": "float32", "shape": ["batch", 2]}}
    assert transformer["tokenizer"]["append_eos"] is True
    assert recurrent["tokenizer"]["append_eos"] is False


def test_export_run_records_metrics_and_training_facts_from_the_run(tmp_path: Path) -> None:
    run_dir = make_tiny_run(tmp_path, "gru")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.update(val_nats_per_char=1.52, steps=1234, seconds=56.5, data=[str(tmp_path / "corpus.txt")])
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    manifest = manifest_of(export_run(run_dir, tmp_path / "exported"))
    assert manifest["metrics"]["val_nats_per_char"] == 1.52
    assert "steps" not in manifest["metrics"]
    assert (manifest["training"]["steps"], manifest["training"]["seconds"]) == (1234, 56.5)
    # Paths are recorded relative to the repository where they can be (../shared/data/...).
    recorded = [(REPO_ROOT / path).resolve() for path in manifest["training"]["data"]]
    assert recorded == [(tmp_path / "corpus.txt").resolve()]


def test_reexport_replaces_the_folder_and_leaves_no_stray_files(tmp_path: Path, tiny_model_dir) -> None:
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir("rnn"), target)
    (target / "stale.bin").write_bytes(b"old")
    export_run(make_tiny_run(tmp_path / "fresh", "rnn"), target)
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json", "model.onnx", "tokenizer.json"]
    assert not (tmp_path / "model.partial").exists()


def test_failed_parity_keeps_the_previous_artifact_and_leaves_no_partial_folder(
    tmp_path: Path, tiny_model_dir, monkeypatch
) -> None:
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir("llama"), target)
    before = manifest_of(target)

    def disagree(*args: object, **kwargs: object) -> dict[str, float]:
        raise ParityError("prefill differs")

    monkeypatch.setattr(parity, "check_decoder", disagree)
    with pytest.raises(ParityError):
        export_run(make_tiny_run(tmp_path / "fresh", "llama", seed=9), target)
    assert manifest_of(target) == before
    assert not (tmp_path / "model.partial").exists()


def test_a_recipes_chat_template_is_written_into_the_manifest(tmp_path: Path) -> None:
    run_dir = make_tiny_run(tmp_path, "gru")
    recipe = load_recipe(run_dir / "config.toml")
    chat = ChatConfig(template="chat/play-script.jinja", stop=["\n\n"])
    (run_dir / "config.toml").write_text(recipe_to_toml(dataclasses.replace(recipe, chat=chat)))
    folder = export_run(run_dir, tmp_path / "exported")
    template = (REPO_ROOT / "training" / "configs" / "chat" / "play-script.jinja").read_text()
    assert manifest_of(folder)["chat"] == {"template": template, "stop": ["\n\n"]}
    assert read_manifest(folder).chat == {"template": template, "stop": ["\n\n"]}
    # Without a template (every classifier, most generators) the manifest has no chat at all.
    assert "chat" not in manifest_of(
        export_run(make_tiny_run(tmp_path / "plain", "gru"), tmp_path / "plain-x")
    )
