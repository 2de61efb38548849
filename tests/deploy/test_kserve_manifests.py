"""deploy/kserve: the ServingRuntime and InferenceService pass KServe's own CRD schemas (vendored in
tests/deploy/schemas/kserve, see SOURCE.txt) with a JSON-schema validator, offline, and keep the
promises of the runtime: the V2 protocol, probes on routes the service has, resources, ports that match.

The API server prunes unknown fields of a CRD object silently; validated strictly (as `kubectl apply
--validate=strict` does), a misspelt field must fail here instead.
"""

from __future__ import annotations

import copy
import gzip
import json
import re
from functools import cache
from typing import Any

import jsonschema
import pytest
import yaml

from service.api import rest_oip
from tests.deploy.deploy_helpers import DEPLOY_DIR, REPO_ROOT

KSERVE_DIR = DEPLOY_DIR / "kserve"
SCHEMAS = REPO_ROOT / "tests" / "deploy" / "schemas" / "kserve"
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _strict(node: Any) -> Any:
    """Objects with declared properties accept no others (unless the CRD keeps unknown fields)."""
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@cache
def validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    version = api_version.split("/")[1]
    schema = json.loads(gzip.decompress((SCHEMAS / f"{kind}-{version}.json.gz").read_bytes()))
    return jsonschema.Draft7Validator(_strict(schema))


def errors(doc: dict[str, Any]) -> list[str]:
    found = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator(doc["apiVersion"], doc["kind"]).iter_errors(doc)
    ]
    name = doc.get("metadata", {}).get("name", "")
    if not DNS_1123.match(name) or len(name) > 63:  # the CRD leaves metadata to the API server
        found.append(f"metadata/name: {name!r} is not a DNS-1123 label")
    return found


def manifests() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted(KSERVE_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[f"{path.name}:{doc['kind']}"] = doc
    return docs


def by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in manifests().values() if d["kind"] == kind]
    return doc


def test_there_is_a_runtime_and_an_inference_service() -> None:
    kinds = sorted(d["kind"] for d in manifests().values())
    assert kinds == ["InferenceService", "ServingRuntime"]


@pytest.mark.parametrize("name", sorted(manifests()))
def test_each_manifest_passes_the_kserve_crd_schema(name: str) -> None:
    assert errors(manifests()[name]) == []


@pytest.mark.parametrize(
    ("kind", "path", "bad_key"),
    [
        ("InferenceService", ["spec", "predictor", "model"], "protocolVerison"),
        ("ServingRuntime", ["spec"], "protocolVersion"),  # the runtime's field is protocolVersions
        ("ServingRuntime", ["spec", "containers", 0, "readinessProbe", "httpGet"], "paht"),
    ],
)
def test_a_misspelt_field_fails_validation(kind: str, path: list[str | int], bad_key: str) -> None:
    doc = copy.deepcopy(by_kind(kind))
    node: Any = doc
    for step in path:
        node = node[step]
    node[bad_key] = "v2"
    assert any(bad_key in e for e in errors(doc)), "the validator let a misspelt field through"


def test_a_wrong_type_fails_validation() -> None:
    doc = copy.deepcopy(by_kind("InferenceService"))
    doc["spec"]["predictor"]["minReplicas"] = "one"
    assert errors(doc)


def test_the_runtime_serves_v2_with_probes_on_the_service_routes_and_resources() -> None:
    runtime = by_kind("ServingRuntime")["spec"]
    assert set(runtime["protocolVersions"]) == {"v2", "grpc-v2"}
    (container,) = runtime["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SEQSERVE_MODELS_DIR"] == "/mnt/models"  # where KServe's storage initializer writes
    http_port = int(env["SEQSERVE_HTTP_PORT"])
    assert [p["containerPort"] for p in container["ports"]] == [http_port]
    routes = {route.path for route in rest_oip.router.routes}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] == http_port and get["path"] in routes, probe
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert runtime["annotations"]["prometheus.kserve.io/port"] == str(http_port)


def test_the_inference_service_uses_the_runtime_over_v2() -> None:
    runtime = by_kind("ServingRuntime")
    model = by_kind("InferenceService")["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] == "v2"
    formats = {(f["name"], f["version"]) for f in runtime["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"]["version"]) in formats
    assert model["resources"]["requests"] and model["resources"]["limits"]


def test_the_vendored_schemas_name_their_source() -> None:
    source = (SCHEMAS / "SOURCE.txt").read_text()
    assert "Apache License 2.0" in source and re.search(r"commit [0-9a-f]{40}", source)
    for schema in SCHEMAS.glob("*.json.gz"):
        assert schema.name in source
