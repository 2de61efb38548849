"""Test-wide setup: the repository on sys.path, and tiny exported models shared by the whole session."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory `tiny_model_dir(kind, seed=0) -> artifact folder`, exported once per session and kind.

    The folders are shared: treat them as read-only and copy one before tampering with it.
    """
    # Imported here so that tests which never ask for a model do not import torch.
    from harness.tiny_models import make_tiny_model_dir

    made: dict[tuple[str, int], Path] = {}

    def make(kind: str, seed: int = 0) -> Path:
        if (kind, seed) not in made:
            made[kind, seed] = make_tiny_model_dir(tmp_path_factory.mktemp(f"tiny-{kind}-{seed}"), kind, seed)
        return made[kind, seed]

    return make
