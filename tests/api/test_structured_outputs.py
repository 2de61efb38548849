"""Structured outputs over every API: native REST, the OpenAI completions route (through the unmodified
`openai` client) and gRPC; on the Transformer and the RNN; bad constraints are 400 / INVALID_ARGUMENT.

The tiny models speak a character vocabulary without braces or quotes, so JSON here is a number;
tests/engine/test_structured.py covers JSON objects on the committed byte-level models.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import grpc
import httpx
import jsonschema
import openai
import pytest

from harness.metrics_reader import sample
from harness.server_process import ServerProcess
from service.api.generated.seqserve.v1 import inference_pb2 as pb
from service.api.generated.seqserve.v1 import inference_pb2_grpc as pb_grpc
from service.api.schemas import CompletionBody, SamplingOptions
from tests.api.conftest import GEN_MODEL, RNN_MODEL

TIMEOUT = 30.0
PROMPT = "To be, or not"
REGEX = r"[A-Z][a-z]{2,6}( [a-z]{1,5}){1,3}\."
CHOICES = ["yes", "no", "perhaps"]
NUMBER_SCHEMA = {"type": "integer", "minimum": 10, "maximum": 999}
# Only characters of the tiny vocabulary (it has no "c", "v", "x", "j" or "z").
GRAMMAR = 'start: "part " PART ", line " LINE\nPART: /[1-5]/\nLINE: /[1-9][0-9]?/'
GRAMMAR_AS_REGEX = r"part [1-5], line [1-9][0-9]?"


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=TIMEOUT, max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[pb_grpc.InferenceStub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
        yield pb_grpc.InferenceStub(channel)


def native(http: httpx.Client, model: str, constraint: dict, **params: object) -> list[dict]:
    body = {
        "model": model,
        "prompt": PROMPT,
        "params": {"max_tokens": 40, "n": 4, "seed": 1, "temperature": 1.0, **constraint, **params},
    }
    reply = http.post("/v1/generate", json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()["completions"]


def matches(kind: str, text: str) -> bool:
    if kind == "regex":
        return re.fullmatch(REGEX, text) is not None
    if kind == "choice":
        return text in CHOICES
    if kind == "grammar":
        return re.fullmatch(GRAMMAR_AS_REGEX, text) is not None
    jsonschema.validate(json.loads(text), NUMBER_SCHEMA)
    return True


KINDS = {"regex": REGEX, "choice": CHOICES, "json": NUMBER_SCHEMA, "grammar": GRAMMAR}


@pytest.mark.parametrize("model", [GEN_MODEL, RNN_MODEL])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_native_structured_outputs_hold_on_both_model_kinds(
    http: httpx.Client, model: str, kind: str
) -> None:
    completions = native(http, model, {"structured_outputs": {kind: KINDS[kind]}})
    for c in completions:
        assert c["finish_reason"] == "stop", c
        assert matches(kind, c["text"]), c["text"]


def test_response_format_json_schema_on_the_native_api(http: httpx.Client) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "number", "schema": NUMBER_SCHEMA}}
    for c in native(http, GEN_MODEL, {"response_format": fmt}):
        assert matches("json", c["text"])


def test_openai_client_sends_both_fields_through_extra_body(client: openai.OpenAI) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "number", "schema": NUMBER_SCHEMA, "strict": True}}
    completion = client.completions.create(
        model=GEN_MODEL, prompt=PROMPT, max_tokens=40, n=4, seed=3, extra_body={"response_format": fmt}
    )
    assert all(matches("json", c.text) and c.finish_reason == "stop" for c in completion.choices)
    completion = client.completions.create(
        model=RNN_MODEL,
        prompt=PROMPT,
        max_tokens=40,
        n=4,
        seed=3,
        logprobs=2,
        extra_body={"structured_outputs": {"choice": CHOICES}},
    )
    for c in completion.choices:
        assert c.text in CHOICES
        assert c.logprobs is not None and len(c.logprobs.tokens) == len(c.text)  # one token per character


def test_openai_stream_with_a_constraint_ends_with_stop(client: openai.OpenAI) -> None:
    stream = client.completions.create(
        model=GEN_MODEL,
        prompt=PROMPT,
        max_tokens=40,
        stream=True,
        seed=5,
        extra_body={"structured_outputs": {"regex": REGEX}},
    )
    text, reasons = "", []
    for chunk in stream:
        text += chunk.choices[0].text
        reasons.append(chunk.choices[0].finish_reason)
    assert re.fullmatch(REGEX, text)
    assert reasons[-1] == "stop"


def test_grpc_structured_outputs_and_response_format(stub: pb_grpc.InferenceStub) -> None:
    choice = pb.StructuredOutputs(choice=pb.Choices(choices=CHOICES))
    reply = stub.Generate(
        pb.GenerateRequest(
            model=RNN_MODEL, prompt=PROMPT, params=pb.SamplingParams(n=4, seed=2, structured_outputs=choice)
        ),
        timeout=TIMEOUT,
    )
    assert {c.text for c in reply.completions} <= set(CHOICES)
    assert all(c.finish_reason == pb.FINISH_REASON_STOP for c in reply.completions)
    fmt = pb.ResponseFormat(
        type="json_schema", json_schema=pb.JsonSchemaFormat(name="n", schema=json.dumps(NUMBER_SCHEMA))
    )
    params = pb.SamplingParams(max_tokens=40, n=4, seed=2, response_format=fmt)
    stream = stub.GenerateStream(
        pb.GenerateRequest(model=GEN_MODEL, prompt=PROMPT, params=params), timeout=TIMEOUT
    )
    texts = [""] * 4
    for message in stream:
        texts[message.index] += message.text
    assert all(matches("json", t) for t in texts)
    grammar = pb.SamplingParams(max_tokens=40, structured_outputs=pb.StructuredOutputs(grammar=GRAMMAR))
    reply = stub.Generate(pb.GenerateRequest(model=GEN_MODEL, prompt=PROMPT, params=grammar), timeout=TIMEOUT)
    assert re.fullmatch(GRAMMAR_AS_REGEX, reply.completions[0].text)


def test_an_unbounded_constraint_stops_at_max_tokens(http: httpx.Client) -> None:
    # vLLM #52011: an empty schema allows any JSON, here an endless number: max_tokens ends it.
    for c in native(http, GEN_MODEL, {"structured_outputs": {"json": {}}}, max_tokens=12, n=2):
        assert c["finish_reason"] in ("length", "stop")
        assert len(c["token_ids"]) <= 12


def test_a_constraint_the_vocabulary_cannot_continue_ends_with_length(http: httpx.Client) -> None:
    # The tiny vocabulary has "a" but no "c": after "a" no token continues, and the sample ends.
    for c in native(http, RNN_MODEL, {"structured_outputs": {"regex": "ac+"}}, n=2):
        assert (c["text"], c["finish_reason"]) == ("a", "length")
    assert native(http, RNN_MODEL, {}, max_tokens=3, n=1)[0]["finish_reason"] == "length"  # still serving


BAD = [
    ({"structured_outputs": {"regex": "a(b"}}, "structured_outputs.regex"),
    ({"structured_outputs": {"json": {"type": "wat"}}}, "structured_outputs.json"),
    ({"structured_outputs": {"json": "{not json"}}, "structured_outputs.json"),
    ({"structured_outputs": {"grammar": "start: nowhere"}}, "structured_outputs.grammar"),
    ({"structured_outputs": {"choice": []}}, "structured_outputs.choice"),
    ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs"),
    ({"structured_outputs": {}}, "structured_outputs"),
    ({"structured_outputs": {"json_object": True}}, "structured_outputs.json_object"),  # no "{" in vocab
    ({"structured_outputs": {"regex": "a" * 70_000}}, "structured_outputs.regex"),
    ({"structured_outputs": {"regx": "a"}}, "structured_outputs.regx"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "wat"}}}},
        "response_format.json_schema.schema",
    ),
    (
        {"response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a"}},
        "structured_outputs",
    ),
]


@pytest.mark.parametrize(("fields", "param"), BAD, ids=[p for _, p in BAD])
def test_bad_constraints_are_400_naming_the_field_on_both_rest_routes(
    http: httpx.Client, fields: dict, param: str
) -> None:
    reply = http.post("/v1/generate", json={"model": GEN_MODEL, "prompt": PROMPT, "params": fields})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == f"params.{param}"
    reply = http.post("/v1/completions", json={"model": GEN_MODEL, "prompt": PROMPT, **fields})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["message"].startswith(param + ": ")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        (
            pb.SamplingParams(structured_outputs=pb.StructuredOutputs(regex="a(b")),
            "params.structured_outputs.regex",
        ),
        (
            pb.SamplingParams(structured_outputs=pb.StructuredOutputs(json="[1")),
            "params.structured_outputs.json",
        ),
        (pb.SamplingParams(structured_outputs=pb.StructuredOutputs()), "params.structured_outputs"),
        (
            pb.SamplingParams(response_format=pb.ResponseFormat(type="json_schema")),
            "params.response_format.json_schema",
        ),
    ],
)
def test_bad_constraints_are_invalid_argument_over_grpc(
    stub: pb_grpc.InferenceStub, params: pb.SamplingParams, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(pb.GenerateRequest(model=GEN_MODEL, prompt=PROMPT, params=params), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(field + ": "), caught.value.details()


def test_a_repeated_schema_is_a_cache_hit_in_the_metrics(http: httpx.Client) -> None:
    schema = {"type": "integer", "minimum": 1, "maximum": 77, "title": "cache probe"}
    labels = {"model": GEN_MODEL}
    before_hit = sample(http, "seqserve_grammar_cache_total", result="hit", **labels) or 0.0
    before_miss = sample(http, "seqserve_grammar_cache_total", result="miss", **labels) or 0.0
    for _ in range(3):
        native(http, GEN_MODEL, {"structured_outputs": {"json": schema}}, n=1)
    assert sample(http, "seqserve_grammar_cache_total", result="miss", **labels) == before_miss + 1
    assert sample(http, "seqserve_grammar_cache_total", result="hit", **labels) == before_hit + 2


def test_schemas_reach_the_engine_with_their_properties_in_order() -> None:
    # The grammar writes properties in the schema's order: a sorted copy would reorder the output.
    schema = {"type": "object", "properties": {"speaker": {"type": "string"}, "act": {"type": "integer"}}}
    native_options = SamplingOptions.model_validate({"structured_outputs": {"json": schema}})
    body = CompletionBody.model_validate(
        {"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}
    )
    for constraint in (native_options.constraint(), body.options().constraint()):
        assert constraint is not None and constraint.kind == "json"
        assert list(json.loads(constraint.spec)["properties"]) == ["speaker", "act"]
