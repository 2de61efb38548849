"""Reading and checking manifest.json (docs/artifact-contract.md), including the sha256 of every file."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.engine.errors import ManifestError, ModelIntegrityError

SUPPORTED_SCHEMA = 1
PROVIDERS = ("cpu", "cuda")


@dataclass(frozen=True)
class ModelVariant:
    """One graph of a model for one execution provider (manifest `variants.<provider>`).

    A model without `variants` has one variant, the top-level `onnx` section, for every provider.
    """

    provider: str
    file: str
    compute_dtype: str
    kv_cache_dtype: str | None
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    kv_cache: dict[str, Any] | None = None  # this graph's cache geometry (the `onnx` section's if unsaid)
    state: dict[str, Any] | None = None

    def input_dtype(self, name: str) -> str | None:
        """The dtype the manifest gives a graph input (`float32`, `float16`, `int8`, ...), if it does."""
        described = self.inputs.get(name)
        return str(described["dtype"]) if isinstance(described, dict) and "dtype" in described else None


@dataclass(frozen=True)
class Manifest:
    """The parts of manifest.json the service relies on; `raw` keeps the rest (metrics, training)."""

    directory: Path
    name: str
    task: str
    architecture: str
    context_length: int | None
    onnx: dict[str, Any]
    tokenizer: dict[str, Any]
    labels: list[str] | None
    raw: dict[str, Any]
    # {"template": Jinja text, "stop": [...]} for a generation model that can chat, else None.
    chat: dict[str, Any] | None = None

    @property
    def model_path(self) -> Path:
        return self.directory / self.onnx["file"]

    def variant(self, provider: str) -> ModelVariant:
        """The graph to load under `provider`: `variants.<provider>`, else the top-level `onnx` section.

        A manifest with variants but none for `provider` falls back to its `cpu` variant, which every
        provider can run (ORT places what the device lacks on the CPU).
        """
        variants = {k: _variant_entry(v) for k, v in (self.raw.get("variants") or {}).items()}
        entry = variants.get(provider) or variants.get("cpu")
        if entry is None:
            kv = self.onnx.get("kv_cache") or {}
            return ModelVariant(
                provider=provider,
                file=str(self.onnx["file"]),
                compute_dtype=str(self.onnx.get("compute_dtype") or "float32"),
                kv_cache_dtype=str(kv["dtype"]) if kv.get("dtype") else None,
                inputs=dict(self.onnx.get("inputs") or {}),
                outputs=dict(self.onnx.get("outputs") or {}),
                kv_cache=self.onnx.get("kv_cache"),
                state=self.onnx.get("state"),
            )
        return ModelVariant(
            provider=provider if provider in variants else "cpu",
            file=str(entry["file"]),
            compute_dtype=str(entry.get("compute_dtype") or "float32"),
            kv_cache_dtype=str(entry["kv_cache_dtype"]) if entry.get("kv_cache_dtype") else None,
            inputs=dict(entry.get("inputs") or {}),
            outputs=dict(entry.get("outputs") or {}),
            kv_cache=entry.get("kv_cache", self.onnx.get("kv_cache")),
            state=entry.get("state", self.onnx.get("state")),
        )

    def variant_path(self, variant: ModelVariant) -> Path:
        return self.directory / variant.file

    @property
    def tokenizer_path(self) -> Path:
        return self.directory / self.tokenizer["file"]

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer["vocab_size"])


def read_manifest(model_dir: Path, verify: bool = True) -> Manifest:
    """Parse manifest.json; with `verify`, refuse the model unless every listed file matches its sha256."""
    model_dir = Path(model_dir)
    path = model_dir / "manifest.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ManifestError(f"{model_dir}: no manifest.json") from exc
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
    try:
        if int(raw.get("schema_version", 1)) > SUPPORTED_SCHEMA:
            raise ManifestError(f"{path}: schema_version {raw['schema_version']} is newer than this service")
        manifest = Manifest(
            directory=model_dir,
            name=str(raw["name"]),
            task=str(raw["task"]),
            architecture=str(raw["architecture"]),
            context_length=raw.get("context_length"),
            onnx=dict(raw["onnx"]),
            tokenizer=dict(raw["tokenizer"]),
            labels=raw.get("labels"),
            raw=raw,
            chat=_chat_section(raw.get("chat"), path),
        )
        manifest.onnx["file"]
        manifest.tokenizer["file"]
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ManifestError):
            raise
        raise ManifestError(f"{path}: missing or malformed field {exc}") from exc
    _check_variants(raw.get("variants"), path)
    if manifest.task not in ("generate", "classify"):
        raise ManifestError(f"{path}: task must be 'generate' or 'classify', got {manifest.task!r}")
    if verify:
        files = raw.get("files") or {}
        verify_files(model_dir, files)
        for provider in raw.get("variants") or {}:
            name = manifest.variant(provider).file
            if name not in files:
                raise ModelIntegrityError(f"{model_dir.name}: variant file {name} has no sha256 under files")
    return manifest


def _chat_section(chat: Any, path: Path) -> dict[str, Any] | None:
    """`chat` is optional; when present its template is text and its stop a list of strings."""
    if chat is None:
        return None
    if not isinstance(chat, dict) or not isinstance(chat.get("template"), str) or not chat["template"]:
        raise ManifestError(f"{path}: chat.template must be a non-empty string (a Jinja template)")
    stop = chat.get("stop", [])
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 16:
        raise ManifestError(f"{path}: chat.stop must be a list of at most 16 non-empty strings")
    return {"template": chat["template"], "stop": list(stop)}


def _variant_entry(entry: Any) -> Any:
    """A variant is an object with `file` and dtypes; a bare file name is accepted as `{"file": name}`."""
    return {"file": entry} if isinstance(entry, str) else entry


def _check_variants(variants: Any, path: Path) -> None:
    """`variants` is optional; when present it maps known providers to entries naming a file."""
    if variants is None:
        return
    if not isinstance(variants, dict) or not variants:
        raise ManifestError(f"{path}: variants must be an object keyed by provider ({', '.join(PROVIDERS)})")
    for provider, entry in variants.items():
        if provider not in PROVIDERS:
            raise ManifestError(
                f"{path}: variants.{provider}: unknown provider (one of {', '.join(PROVIDERS)})"
            )
        entry = _variant_entry(entry)
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not entry["file"]:
            raise ManifestError(f"{path}: variants.{provider}.file must name the graph file")
        for group in ("inputs", "outputs"):
            if not isinstance(entry.get(group, {}), dict):
                raise ManifestError(f"{path}: variants.{provider}.{group} must be an object")


def verify_files(model_dir: Path, files: dict[str, Any]) -> None:
    """Every file the manifest lists must exist with the recorded sha256; the model files must be listed."""
    if not files:
        raise ModelIntegrityError(f"{model_dir}: manifest lists no file hashes")
    for name, entry in files.items():
        path = model_dir / name
        if not path.is_file():
            raise ModelIntegrityError(f"{model_dir.name}: {name} is missing")
        expected = entry["sha256"] if isinstance(entry, dict) else str(entry)
        actual = sha256_file(path)
        if actual != expected:
            raise ModelIntegrityError(
                f"{model_dir.name}: {name} does not match its manifest (sha256 {actual[:12]}…, expected "
                f"{expected[:12]}…); refusing to serve this model"
            )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
