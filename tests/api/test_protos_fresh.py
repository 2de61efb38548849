"""The committed gRPC code must be what the pinned grpcio-tools makes from protos/ today."""

from __future__ import annotations

from pathlib import Path

from scripts import protogen


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    fresh = protogen.generate(tmp_path)
    assert fresh, "protoc produced nothing"
    for path in fresh:
        committed = protogen.GENERATED_ROOT / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run python scripts/protogen.py"
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run python scripts/protogen.py"
        )


def test_generated_code_imports_from_the_service_package() -> None:
    from service.api.generated.seqserve.v1 import inference_pb2, inference_pb2_grpc

    assert inference_pb2.DESCRIPTOR.package == "seqserve.v1"
    assert hasattr(inference_pb2_grpc, "InferenceStub")
