"""The committed models, and the ONNX file each serves on a provider (the manifest's `variants`,
read by the service's own Manifest.variant: the same choice the engine makes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.engine.manifest import read_manifest

EXPORTED = Path(__file__).resolve().parents[2] / "exported_models"


def manifest(model_dir: Path) -> dict[str, Any]:
    return json.loads((Path(model_dir) / "manifest.json").read_text())


def variant_file(model_dir: Path, provider: str) -> tuple[Path, str]:
    """(the ONNX file for `provider`, which variant it is: `cuda`, `cpu`)."""
    parsed = read_manifest(Path(model_dir), verify=False)
    variant = parsed.variant(provider)
    return parsed.variant_path(variant), variant.provider if parsed.raw.get("variants") else "onnx"


def exported_models(task: str | None = None) -> dict[str, Path]:
    """name -> folder of every committed model (of `task`, when given)."""
    found = {}
    for folder in sorted(EXPORTED.iterdir()):
        if (folder / "manifest.json").exists():
            raw = manifest(folder)
            if task is None or raw["task"] == task:
                found[raw["name"]] = folder
    return found
