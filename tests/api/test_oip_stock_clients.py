"""tritonclient (http and grpc) and the kserve SDK (REST and gRPC), unmodified and with their default
binary-data settings, against a live server: they must read what /v1/sentiment says for the same texts.

The clients live in their own venv (tests/clients/requirements.txt says why), built once per checkout;
each call runs tests/clients/oip_calls.py there and talks to the server over the network.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.server_process import ServerProcess
from tests.api.conftest import CLF_MODEL
from tests.clients import client_venv

CALLS = Path(client_venv.__file__).with_name("oip_calls.py")
CALL_TIMEOUT_S = 120

TEXTS = ["a fine film", "dull, slow and far too long", "é漢字🙂"]


@pytest.fixture(scope="session")
def client_python() -> Path:
    return client_venv.ensure()


@pytest.fixture
def call_client(client_python: Path, server: ServerProcess) -> Callable[..., dict[str, Any]]:
    """`call_client(kind, model, texts)`: what that client got from the shared server."""

    def run(kind: str, model: str, texts: list[str]) -> dict[str, Any]:
        done = subprocess.run(
            [str(client_python), str(CALLS), kind, server.url, server.grpc_target, model, *texts],
            capture_output=True,
            text=True,
            timeout=CALL_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        return json.loads(done.stdout)

    return run


@pytest.fixture(scope="module")
def sentiment(http: httpx.Client) -> tuple[list[str], list[list[float]]]:
    """Labels and probability rows (in the model's label order) from the native route."""
    results = http.post("/v1/sentiment", json={"model": CLF_MODEL, "texts": TEXTS}).json()["results"]
    return [r["label"] for r in results], [list(r["probabilities"].values()) for r in results]


@pytest.mark.parametrize("kind", ["triton-http", "triton-grpc"])
def test_tritonclient(
    call_client: Callable[..., dict[str, Any]], sentiment: tuple[list[str], list[list[float]]], kind: str
) -> None:
    got = call_client(kind, CLF_MODEL, TEXTS)
    labels, probabilities = sentiment
    assert got["live"] and got["ready"] and got["model_ready"]
    assert got["server_name"] == "seqserve" and "binary_tensor_data" in got["extensions"]
    assert got["inputs"] == ["text"] and got["outputs"] == ["label", "probabilities"]
    assert got["label"] == labels
    assert got["probabilities"] == probabilities  # float32 both ways: exact
    assert got["only_probabilities"] == got["probabilities"] and not got["only_has_label"]
    assert "no-such-model" in got["missing_model_error"]


def test_kserve_rest_client(
    call_client: Callable[..., dict[str, Any]], sentiment: tuple[list[str], list[list[float]]]
) -> None:
    got = call_client("kserve-rest", CLF_MODEL, TEXTS)
    labels, probabilities = sentiment
    assert got["live"] and got["ready"] and got["model_ready"]
    for mode in ("binary", "json"):
        assert got[mode]["id"] == f"kserve-{mode == 'binary'}"
        assert got[mode]["label"] == labels
        assert got[mode]["probabilities"] == probabilities


def test_kserve_grpc_client(
    call_client: Callable[..., dict[str, Any]], sentiment: tuple[list[str], list[list[float]]]
) -> None:
    got = call_client("kserve-grpc", CLF_MODEL, TEXTS)
    labels, probabilities = sentiment
    assert got["live"] and got["ready"] and got["model_ready"]
    assert got["id"] == "kserve-grpc"
    assert got["label"] == labels and got["probabilities"] == probabilities
