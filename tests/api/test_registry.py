"""The registry in-process over real tiny models: tampered or duplicate models are refused and reported,
the others served, and readiness follows the documented policy."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from service.registry import ModelRegistry, ModelState
from service.settings import Settings
from tests.api.conftest import BROKEN_MODEL, GEN_MODEL, copy_model


def load(models_dir: Path, **settings: object) -> ModelRegistry:
    registry = ModelRegistry(
        Settings(models_dir=models_dir, warmup=False, intra_op_threads=1, max_slots=2, **settings)
    )

    async def run() -> None:
        registry.discover()
        await registry.load_all()
        await registry.stop(1.0)  # states were recorded; free the threads

    asyncio.run(run())
    return registry


def two_models(api_models_dir: Path, root: Path) -> Path:
    for name in (GEN_MODEL, BROKEN_MODEL):
        shutil.copytree(api_models_dir / name, root / name)
    (root / "not-a-model").mkdir()  # no manifest: skipped, not an error
    return root


def test_a_tampered_model_is_refused_while_the_others_load(api_models_dir: Path, tmp_path: Path) -> None:
    registry = load(two_models(api_models_dir, tmp_path))
    states = {e.name: e for e in registry.entries()}
    assert set(states) == {GEN_MODEL, BROKEN_MODEL}
    assert states[BROKEN_MODEL].state is ModelState.FAILED
    assert "model.onnx does not match its manifest" in (states[BROKEN_MODEL].error or "")
    assert states[GEN_MODEL].state is ModelState.STOPPED  # it was ready until the stop above
    assert registry.default_name("generate") == GEN_MODEL


def test_readiness_ignores_a_failed_model_unless_all_are_required(
    api_models_dir: Path, tmp_path: Path
) -> None:
    lenient = ModelRegistry(Settings(models_dir=two_models(api_models_dir, tmp_path / "a"), warmup=False))
    strict = ModelRegistry(
        Settings(models_dir=two_models(api_models_dir, tmp_path / "b"), warmup=False, require_all_models=True)
    )
    assert lenient.readiness() == (False, "models are loading")

    async def run() -> None:
        for registry in (lenient, strict):
            registry.discover()
            await registry.load_all()
        assert lenient.readiness() == (True, "ready")
        ready, reason = strict.readiness()
        assert not ready and BROKEN_MODEL in reason
        for registry in (lenient, strict):
            await registry.stop(1.0)

    asyncio.run(run())


def test_two_folders_with_one_model_name_serve_the_first_only(api_models_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(api_models_dir / GEN_MODEL, tmp_path / "a-first")
    copy_model(api_models_dir / GEN_MODEL, tmp_path / "b-second", GEN_MODEL)
    registry = load(tmp_path)
    served = [e for e in registry.entries() if e.state is not ModelState.FAILED]
    refused = [e for e in registry.entries() if e.state is ModelState.FAILED]
    assert [e.directory.name for e in served] == ["a-first"]
    assert len(refused) == 1 and "duplicate model name" in (refused[0].error or "")


def test_a_missing_models_dir_serves_nothing_and_is_not_ready(tmp_path: Path) -> None:
    registry = load(tmp_path / "absent")
    assert registry.entries() == []
    assert registry.readiness() == (False, "no model is ready")
