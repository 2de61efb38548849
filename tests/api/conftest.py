"""API test fixtures: a models dir of tiny exported models (plus one tampered copy) and a real server.

The main server is shared by the session; tests that need other settings start their own.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from harness.server_process import REPO_ROOT, ServerProcess

GEN_MODEL = "tiny-gpt2"
RNN_MODEL = "tiny-lstm"
CLF_MODEL = "tiny-transformer_classifier"
RNN_CLF_MODEL = "tiny-rnn_classifier"
BROKEN_MODEL = "tiny-broken"
# The Transformer classifier read in windows of 8 ids (EOS included), 6 apart, pooled by the mean.
WINDOWED_CLF_MODEL = "tiny-windowed"
WINDOWED = {
    "max_tokens": 8,
    "truncation": "head",
    "long_documents": "windows",
    "window_stride": 6,
    "pooling": "mean",
}
# Long enough that only a cancel ends it: tests that use it must close their streams.
# Far more tokens than any test waits for: a tiny RNN on a quiet CPU makes ~20k tokens a second.
ENDLESS = {"max_tokens": 10_000_000, "ignore_eos": True, "temperature": 0}


def committed_chat_section(model: str = "shakespeare-gpt") -> dict:
    """The `chat` of a committed model's manifest (its play-script template and stop)."""
    return json.loads((REPO_ROOT / "exported_models" / model / "manifest.json").read_text())["chat"]


def copy_model(src: Path, dst: Path, name: str) -> Path:
    """A copy of an artifact folder under another model name (the manifest is not hashed)."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["name"] = name
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dst


@pytest.fixture(scope="session")
def api_models_dir(tiny_model_dir: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api-models")
    for kind in ("gpt2", "lstm", "transformer_classifier", "rnn_classifier"):
        copy_model(tiny_model_dir(kind), root / f"tiny-{kind}", f"tiny-{kind}")
    # The generator chats with the committed Shakespeare template; the LSTM keeps none (chat is a 400).
    manifest_path = root / GEN_MODEL / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["chat"] = committed_chat_section()
    manifest_path.write_text(json.dumps(manifest, indent=2))
    windowed = copy_model(
        tiny_model_dir("transformer_classifier"), root / WINDOWED_CLF_MODEL, WINDOWED_CLF_MODEL
    )
    manifest = json.loads((windowed / "manifest.json").read_text())
    manifest["preprocessing"] = WINDOWED
    (windowed / "manifest.json").write_text(json.dumps(manifest, indent=2))
    # One flipped byte in the graph: its sha256 no longer matches, so the service must refuse it.
    broken = copy_model(tiny_model_dir("gpt2"), root / BROKEN_MODEL, BROKEN_MODEL)
    graph = bytearray((broken / "model.onnx").read_bytes())
    graph[len(graph) // 2] ^= 0xFF
    (broken / "model.onnx").write_bytes(bytes(graph))
    return root


def start_server(models_dir: Path, log_path: Path, **env: str | int | float) -> ServerProcess:
    return ServerProcess(models_dir, log_path, **env).start_ready()


@pytest.fixture(scope="session")
def server(api_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The shared server, all models, with the service's defaults but two: a long max_tokens limit
    (for cancellation tests) and a default classifier (there are two)."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    proc = start_server(
        api_models_dir, log, max_new_tokens=ENDLESS["max_tokens"], default_classify_model=CLF_MODEL
    )
    yield proc
    code = proc.stop()
    assert code == 0, proc.log()


@pytest.fixture(scope="session")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        yield client
