"""OpenAI logprobs on a byte-level BPE model (the committed shakespeare-gpt): a character split over
several tokens keeps its offset, byte tokens are named by their bytes (distinct keys), and special
tokens the text leaves out take no room. Offsets are characters of the returned text, never past it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from harness.server_process import REPO_ROOT, ServerProcess, linked_models
from tests.api.conftest import start_server

MODEL = "shakespeare-gpt"
EOS = 2


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    root = tmp_path_factory.mktemp("byte-level")
    models = linked_models(root, {MODEL: REPO_ROOT / "exported_models" / MODEL})
    server: ServerProcess = start_server(models, root / "server.log", max_slots=2, warmup=False)
    try:
        with httpx.Client(base_url=server.url, timeout=60.0) as http:
            yield http
    finally:
        assert server.stop() == 0, server.log()


def score(client: httpx.Client, prompt: str | list[int], stream: bool = False) -> dict:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 1, "stream": stream}
    if not stream:
        response = client.post("/v1/completions", json=body)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]
    with client.stream("POST", "/v1/completions", json=body) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    first = chunks[0]["choices"][0]
    return {"text": "".join(c["choices"][0]["text"] for c in chunks), "logprobs": first["logprobs"]}


@pytest.mark.parametrize("stream", [False, True])
def test_a_character_split_over_byte_tokens_keeps_one_offset_and_names_its_bytes(
    client: httpx.Client, stream: bool
) -> None:
    choice = score(client, "🌹 ROMEO", stream)
    assert choice["text"] == "🌹 ROMEO"  # 7 characters
    lp = choice["logprobs"]
    # 🌹 is four byte tokens (f0 9f 8c b9); then " R", "OM", "EO".
    assert lp["tokens"] == ["bytes:\\xf0", "bytes:\\x9f", "bytes:\\x8c", "bytes:\\xb9", " R", "OM", "EO"]
    assert lp["text_offset"] == [0, 0, 0, 0, 1, 3, 5]
    for token, keys in zip(lp["tokens"][1:], lp["top_logprobs"][1:], strict=True):
        assert token in keys  # each echoed token is its own key: no two collide as "\ufffd"


def test_a_special_token_the_text_leaves_out_takes_no_room(client: httpx.Client) -> None:
    romeo = client.post(
        "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 0, "echo": True}
    )
    assert romeo.status_code == 200
    ids = [419, 575, 609, EOS, 419]  # " R", "OM", "EO", <|eos|>, " R"
    choice = score(client, ids)
    assert choice["text"] == " ROMEO R"
    assert choice["logprobs"]["tokens"][3] == "<|eos|>"
    assert choice["logprobs"]["text_offset"] == [0, 2, 4, 6, 6]
    assert max(choice["logprobs"]["text_offset"]) <= len(choice["text"])


def test_generated_offsets_stay_inside_the_text_cut_by_a_stop_string(client: httpx.Client) -> None:
    body = {"model": MODEL, "prompt": "ROMEO:", "max_tokens": 40, "temperature": 0, "logprobs": 0}
    full = client.post("/v1/completions", json=body).json()["choices"][0]
    offsets = full["logprobs"]["text_offset"]
    assert offsets == sorted(offsets) and offsets[-1] < len(full["text"])
    stop = full["text"][offsets[5] : offsets[5] + 3]  # a stop string that starts inside the text
    cut = client.post("/v1/completions", json={**body, "stop": [stop]}).json()["choices"][0]
    assert cut["finish_reason"] == "stop" and len(cut["text"]) < len(full["text"])
    assert max(cut["logprobs"]["text_offset"]) <= len(cut["text"])
