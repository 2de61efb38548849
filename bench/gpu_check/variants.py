"""Which ONNX file a model serves on each provider, from its manifest's `variants` section.

docs/artifact-contract.md: `variants: {cpu: {file: ...}, cuda: {file: model.fp16.onnx, ...}}`; a
model without a variant for the provider serves `onnx.file`. The check reports which one it used, so
a run on a model without its CUDA variant says so rather than passing for one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EXPORTED = Path(__file__).resolve().parents[2] / "exported_models"


def manifest(model_dir: Path) -> dict[str, Any]:
    return json.loads((Path(model_dir) / "manifest.json").read_text())


def variant_file(model_dir: Path, provider: str) -> tuple[Path, str]:
    """(the ONNX file for `provider`, where that choice came from)."""
    raw = manifest(model_dir)
    entry = (raw.get("variants") or {}).get(provider)
    name = entry.get("file") if isinstance(entry, dict) else entry
    if isinstance(name, str) and name:
        return Path(model_dir) / name, f"variants.{provider}"
    return Path(model_dir) / raw["onnx"]["file"], "onnx.file"


def exported_models(task: str | None = None) -> dict[str, Path]:
    """name -> folder of every committed model (of `task`, when given)."""
    found = {}
    for folder in sorted(EXPORTED.iterdir()):
        if (folder / "manifest.json").exists():
            raw = manifest(folder)
            if task is None or raw["task"] == task:
                found[raw["name"]] = folder
    return found
