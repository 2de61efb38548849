"""The Open Inference Protocol (KServe V2) over REST, spoken by hand with httpx: what each route returns,
the binary tensor data extension byte for byte, the generate extension, and the protocol's errors.
(The stock tritonclient and kserve clients are in tests/clients.)"""

from __future__ import annotations

import json
import struct

import httpx
import numpy as np
import pytest

from tests.api.conftest import BROKEN_MODEL, CLF_MODEL, GEN_MODEL, RNN_CLF_MODEL
from tests.api.sse import events as sse_events

TEXTS = ["a fine film", "dull, slow and far too long", "To be, or not to be", "é漢字🙂"]


def text_input(texts: list[str]) -> dict:
    return {"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}


def length_prefixed(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def test_health_and_server_metadata(http: httpx.Client) -> None:
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}
    meta = http.get("/v2").json()
    assert meta["name"] == "seqserve"
    assert {"binary_tensor_data", "generate"} <= set(meta["extensions"])


def test_model_metadata_describes_the_classifier_and_generator_tensors(http: httpx.Client) -> None:
    clf = http.get(f"/v2/models/{CLF_MODEL}").json()
    assert clf["versions"] == ["1"]
    assert clf["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert clf["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
    ]
    assert http.get(f"/v2/models/{CLF_MODEL}/versions/1").json() == clf
    gen = http.get(f"/v2/models/{GEN_MODEL}").json()
    assert [t["name"] for t in gen["inputs"]] == ["text_input"]
    assert [t["name"] for t in gen["outputs"]] == ["text_output"]


def test_model_readiness_follows_the_registry(http: httpx.Client) -> None:
    assert http.get(f"/v2/models/{CLF_MODEL}/ready").status_code == 200
    assert http.get(f"/v2/models/{CLF_MODEL}/versions/1/ready").status_code == 200
    broken = http.get(f"/v2/models/{BROKEN_MODEL}/ready")
    assert broken.status_code == 503 and broken.json()["ready"] is False
    missing = http.get("/v2/models/no-such-model/ready")
    assert missing.status_code == 404 and "no-such-model" in missing.json()["error"]


@pytest.mark.parametrize("model", [CLF_MODEL, RNN_CLF_MODEL])
def test_v2_infer_and_v1_sentiment_give_the_same_labels_and_probabilities(
    http: httpx.Client, model: str
) -> None:
    v1 = http.post("/v1/sentiment", json={"model": model, "texts": TEXTS}).json()["results"]
    v2 = http.post(f"/v2/models/{model}/infer", json={"id": "same-1", "inputs": [text_input(TEXTS)]})
    assert v2.status_code == 200, v2.text
    body = v2.json()
    assert body["model_name"] == model and body["model_version"] == "1" and body["id"] == "same-1"
    label, probs = body["outputs"]
    assert label == {"name": "label", "datatype": "BYTES", "shape": [4], "data": [r["label"] for r in v1]}
    assert probs["shape"] == [4, 2] and probs["datatype"] == "FP32"
    matrix = np.array(probs["data"]).reshape(4, 2)
    columns = list(v1[0]["probabilities"])
    expected = np.array([[r["probabilities"][c] for c in columns] for r in v1])
    assert np.array_equal(matrix, expected)  # one code path: identical floats, not merely close


def test_binary_tensor_data_in_and_out(http: httpx.Client) -> None:
    """tritonclient's defaults: the input raw after the JSON header, and every output raw."""
    raw = length_prefixed([t.encode() for t in TEXTS])
    header = {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [4], "parameters": {"binary_data_size": len(raw)}}
        ],
        "parameters": {"binary_data_output": True},
    }
    head = json.dumps(header).encode()
    response = http.post(
        f"/v2/models/{CLF_MODEL}/infer",
        content=head + raw,
        headers={
            "inference-header-content-length": str(len(head)),
            "content-type": "application/octet-stream",
        },
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    meta = json.loads(response.content[:length])
    data = response.content[length:]
    label, probs = meta["outputs"]
    label_size = label["parameters"]["binary_data_size"]
    probs_size = probs["parameters"]["binary_data_size"]
    assert label_size + probs_size == len(data) and probs_size == 4 * 2 * 4
    json_body = http.post(f"/v2/models/{CLF_MODEL}/infer", json={"inputs": [text_input(TEXTS)]}).json()
    assert data[:label_size] == length_prefixed([s.encode() for s in json_body["outputs"][0]["data"]])
    as_floats = np.frombuffer(data[label_size:], dtype="<f4")
    assert as_floats.tolist() == json_body["outputs"][1]["data"]


def test_outputs_can_be_chosen_and_mixed(http: httpx.Client) -> None:
    body = {
        "inputs": [text_input(TEXTS[:2])],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}],
        "parameters": {"binary_data_output": True},
    }
    response = http.post(f"/v2/models/{CLF_MODEL}/infer", json=body)
    assert "inference-header-content-length" not in response.headers
    (only,) = response.json()["outputs"]
    assert only["name"] == "probabilities" and len(only["data"]) == 4


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"inputs": [text_input(["x"])]}, 404, "no-such-model"),
        ({"inputs": []}, 400, "inputs"),
        ({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["x"]}]}, 400, "shape"),
        ({"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}, 400, "BYTES"),
        ({"inputs": [{"name": "text", "datatype": "NOPE", "shape": [1], "data": ["x"]}]}, 400, "datatype"),
        ({"inputs": [{"name": "pixels", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}, 400, "text"),
        ({"inputs": [text_input(["x"])], "outputs": [{"name": "nope"}]}, 400, "nope"),
        ({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1]}]}, 400, "data"),
        ({"inputs": [text_input(["x"])], "unknown": 1}, 400, "unknown"),
    ],
)
def test_bad_infer_requests_get_the_protocol_error_body(
    http: httpx.Client, body: dict, status: int, words: str
) -> None:
    model = "no-such-model" if status == 404 else CLF_MODEL
    response = http.post(f"/v2/models/{model}/infer", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and words in error


@pytest.mark.parametrize(
    ("content", "header"),
    [
        (b'{"inputs": []}', "99"),  # the header claims more than the body holds
        (b'{"inputs": []}', "abc"),
        (b"not json at all", None),
    ],
)
def test_malformed_binary_bodies_are_400(http: httpx.Client, content: bytes, header: str | None) -> None:
    headers = {"inference-header-content-length": header} if header else {}
    response = http.post(f"/v2/models/{CLF_MODEL}/infer", content=content, headers=headers)
    assert response.status_code == 400 and isinstance(response.json()["error"], str)


def test_a_bytes_element_running_past_the_data_is_400(http: httpx.Client) -> None:
    raw = struct.pack("<I", 1000) + b"short"
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    response = http.post(
        f"/v2/models/{CLF_MODEL}/infer",
        content=head + raw,
        headers={"inference-header-content-length": str(len(head))},
    )
    assert response.status_code == 400 and "past the end" in response.json()["error"]


def test_infer_on_a_generation_model_points_to_generate(http: httpx.Client) -> None:
    response = http.post(f"/v2/models/{GEN_MODEL}/infer", json={"inputs": [text_input(["x"])]})
    assert response.status_code == 400 and "generate" in response.json()["error"]


def test_generate_extension_matches_v1_generate(http: httpx.Client) -> None:
    params = {"max_tokens": 12, "temperature": 0}
    v1 = http.post("/v1/generate", json={"model": GEN_MODEL, "prompt": "To be", "params": params}).json()
    v2 = http.post(f"/v2/models/{GEN_MODEL}/generate", json={"text_input": "To be", "parameters": params})
    assert v2.status_code == 200, v2.text
    body = v2.json()
    assert body["model_name"] == GEN_MODEL and body["model_version"] == "1"
    assert body["text_output"] == v1["completions"][0]["text"]
    assert body["finish_reason"] == "length"


def test_generate_stream_sends_the_same_text_in_events(http: httpx.Client) -> None:
    params = {"max_tokens": 12, "temperature": 0, "stream": True}
    unary = http.post(f"/v2/models/{GEN_MODEL}/generate", json={"text_input": "To be", "parameters": params})
    with http.stream(
        "POST", f"/v2/models/{GEN_MODEL}/generate_stream", json={"text_input": "To be", "parameters": params}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [e for e in sse_events(response) if isinstance(e, dict)]
    assert "".join(e["text_output"] for e in events) == unary.json()["text_output"]
    assert events[-1]["finish_reason"] == "length" and events[-1]["usage"]["completion_tokens"] == 12


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"temperature": -1}, "parameters.temperature"),
        ({"n": 2}, "parameters.n"),
        ({"no_such_knob": 1}, "parameters.no_such_knob"),
        ({"logprobs": 2}, "parameters.logprobs"),
    ],
)
def test_bad_generate_parameters_name_the_field(http: httpx.Client, parameters: dict, field: str) -> None:
    response = http.post(
        f"/v2/models/{GEN_MODEL}/generate", json={"text_input": "x", "parameters": parameters}
    )
    assert response.status_code == 400 and response.json()["error"].startswith(field)


def test_generate_on_a_classifier_and_unknown_routes_are_4xx(http: httpx.Client) -> None:
    response = http.post(f"/v2/models/{CLF_MODEL}/generate", json={"text_input": "x"})
    assert response.status_code == 400 and isinstance(response.json()["error"], str)
    response = http.get(f"/v2/models/{CLF_MODEL}/versions/7")
    assert response.status_code == 404 and "version" in response.json()["error"]
    response = http.get("/v2/nowhere")
    assert response.status_code == 404 and isinstance(response.json()["error"], str)
