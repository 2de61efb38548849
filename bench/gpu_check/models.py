"""The committed models the GPU check measures (which file each serves on a provider is the
service's own choice: Manifest.variant, runtime.open_variant_session)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EXPORTED = Path(__file__).resolve().parents[2] / "exported_models"


def manifest(model_dir: Path) -> dict[str, Any]:
    return json.loads((Path(model_dir) / "manifest.json").read_text())


def exported_models(task: str | None = None) -> dict[str, Path]:
    """name -> folder of every committed model (of `task`, when given)."""
    found = {}
    for folder in sorted(EXPORTED.iterdir()):
        if (folder / "manifest.json").exists():
            raw = manifest(folder)
            if task is None or raw["task"] == task:
                found[raw["name"]] = folder
    return found
