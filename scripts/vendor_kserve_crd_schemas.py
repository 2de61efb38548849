"""Extract the OpenAPI schemas of KServe's CRDs (InferenceService, ServingRuntime, ClusterServingRuntime)
into tests/deploy/schemas/kserve/*.json.gz, for the offline manifest validation in make test.

    python scripts/vendor_kserve_crd_schemas.py KSERVE_CHECKOUT COMMIT

KSERVE_CHECKOUT is a clone of github.com/kserve/kserve (Apache-2.0); the files read are
config/crd/full/serving.kserve.io_<plural>.yaml. Descriptions are dropped (they are most of the size);
every schema keyword is kept as KServe wrote it. The source commit goes into SOURCE.txt.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).resolve().parents[1] / "tests" / "deploy" / "schemas" / "kserve"
CRDS = ("inferenceservices", "servingruntimes", "clusterservingruntimes")


def _without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_without_descriptions(v) for v in node]
    return node


def main(checkout: Path, commit: str) -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    lines = [
        "OpenAPI schemas of KServe's CRDs without descriptions, by scripts/vendor_kserve_crd_schemas.py.",
        "Source: github.com/kserve/kserve, Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0),",
        f"commit {commit}, config/crd/full/:",
    ]
    for plural in CRDS:
        crd = yaml.safe_load(
            (checkout / "config" / "crd" / "full" / f"serving.kserve.io_{plural}.yaml").read_text()
        )
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _without_descriptions(version["schema"]["openAPIV3Schema"])
            name = f"{kind}-{version['name']}.json.gz"
            text = json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()
            (OUT / name).write_bytes(gzip.compress(text, mtime=0))
            lines.append(f"  {name}: {group}/{version['name']} {kind}, from serving.kserve.io_{plural}.yaml")
    (OUT / "SOURCE.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
