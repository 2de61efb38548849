"""System scenarios (issue #7): real `python -m service` processes driven by harness.loadgen.

`make test` runs them small, on tiny seeded models; `make soak` (SEQSERVE_SOAK=1) runs the full
counts on the real models of exported_models/. One switch, the same code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.server_process import REPO_ROOT, ServerProcess
from tests.api.conftest import committed_chat_section, copy_model, start_server

SOAK = os.environ.get("SEQSERVE_SOAK") == "1"


@dataclass(frozen=True)
class Scale:
    """Counts per scenario; the soak values are the issue's."""

    load_warmup: int  # requests before the first RSS reading: pools and caches fill, no leak
    load_requests: int  # measured after the warm-up; RSS is read after every chunk
    load_chunk: int
    load_concurrency: int
    load_tokens: int
    overload_slots: int
    overload_queue: int
    disconnect_clients: int
    sigterm_streams: int
    sigterm_tokens: int
    fuzz_examples: int
    grpc_fuzz_cases: int


# gRPC fuzz cases: 11 methods since the Open Inference Protocol's service joined seqserve's four.
FAST = Scale(2000, 4000, 500, 64, 4, 4, 8, 24, 8, 64, 8, 132)
FULL = Scale(2000, 5000, 500, 64, 12, 8, 24, 100, 32, 256, 60, 1650)


@dataclass(frozen=True)
class Models:
    """A models dir and the names the scenarios drive."""

    root: Path
    generate: str
    recurrent: str  # no context limit: it can generate for as long as a scenario needs
    classify: str


@pytest.fixture(scope="session")
def scale() -> Scale:
    return FULL if SOAK else FAST


@pytest.fixture(scope="session")
def system_models(tiny_model_dir: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Models:
    """Soak: exported_models/ (linked, never modified). Fast: tiny llama + lstm + classifier copies
    (llama: rotary positions give it a 2,048-token cache, so streams can outlast any hang-up)."""
    root = tmp_path_factory.mktemp("system-models")
    if SOAK:
        for folder in sorted((REPO_ROOT / "exported_models").iterdir()):
            if (folder / "manifest.json").exists():
                (root / folder.name).symlink_to(folder.resolve())
        classify = "sst2-gpt" if (root / "sst2-gpt").exists() else ""
        if not classify:  # no real sentiment model exported yet: the tiny one stands in
            copy_model(tiny_model_dir("transformer_classifier"), root / "tiny-clf", "tiny-clf")
            classify = "tiny-clf"
        return Models(root, "shakespeare-gpt", "shakespeare-lstm", classify)
    for kind in ("llama", "lstm", "transformer_classifier"):
        copy_model(tiny_model_dir(kind), root / f"tiny-{kind}", f"tiny-{kind}")
    # The default generator chats (the committed Shakespeare template), so fuzzed chats reach the engine.
    manifest_path = root / "tiny-llama" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["chat"] = committed_chat_section()
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return Models(root, "tiny-llama", "tiny-lstm", "tiny-transformer_classifier")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: start a server over a models dir with SEQSERVE_* overrides; every one is stopped after."""
    started: list[ServerProcess] = []

    def make(models_dir: Path, **env: str | int | float) -> ServerProcess:
        server = start_server(models_dir, tmp_path / f"server-{len(started)}.log", **env)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


RESULTS_DIR = REPO_ROOT / "bench" / "results" / "reliability"


@pytest.fixture(scope="session")
def record() -> Callable[[str, dict], None]:
    """Write a scenario's figures to bench/results/reliability/<name>.json (soak runs only)."""

    def write(name: str, figures: dict) -> None:
        if SOAK:
            RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            (RESULTS_DIR / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")

    return write
