"""Reading and checking manifest.json (docs/artifact-contract.md), including the sha256 of every file."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.engine.errors import ManifestError, ModelIntegrityError

SUPPORTED_SCHEMA = 1


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
    if manifest.task not in ("generate", "classify"):
        raise ManifestError(f"{path}: task must be 'generate' or 'classify', got {manifest.task!r}")
    if verify:
        verify_files(model_dir, raw.get("files") or {})
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
