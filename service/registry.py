"""The models the service serves: one per folder of the models dir with a manifest, loaded and warmed.

A model that cannot be served (unreadable manifest, files not matching their sha256, a load or
warm-up failure) is logged once, clearly, kept in the listing as `failed` with the reason, and
the other models are served. Readiness policy (see docs/api.md): the service is ready once no model
is still loading and at least one is ready; failed models do not hold readiness back unless
`SEQSERVE_REQUIRE_ALL_MODELS=true`, because one broken folder should not take every healthy model
out of a load balancer. Operators see failures in /readyz, /v1/models, gRPC health per model and
`seqserve_model_ready`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from tokenizers import Tokenizer

from service import metrics
from service.chat_template import ChatTemplate
from service.engine import (
    ClassifierBatcher,
    GenerationEngine,
    Manifest,
    load_classifier,
    load_generation_model,
    read_manifest,
)
from service.settings import Settings

log = logging.getLogger(__name__)


class ModelState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass
class ModelEntry:
    """One folder of the models dir and what became of it."""

    name: str
    directory: Path
    state: ModelState = ModelState.LOADING
    manifest: Manifest | None = None
    error: str | None = None
    engine: GenerationEngine | None = None
    classifier: ClassifierBatcher | None = None
    chat_template: ChatTemplate | None = None  # from the manifest's `chat`, for /v1/chat/completions

    @property
    def task(self) -> str | None:
        return self.manifest.task if self.manifest else None

    @property
    def provider(self) -> str | None:
        served = self.engine or self.classifier
        return served.provider if served else None


def _special_tokens(tokenizer: Tokenizer, manifest: Manifest) -> dict[str, str]:
    """bos_token, eos_token... as templates written for transformers expect them."""
    names = {"bos_token": "bos_id", "eos_token": "eos_id", "pad_token": "pad_id", "unk_token": "unk_id"}
    found = {}
    for variable, key in names.items():
        token_id = manifest.tokenizer.get(key)
        token = tokenizer.id_to_token(int(token_id)) if token_id is not None else None
        if token is not None:
            found[variable] = token
    return found


class ModelRegistry:
    """Finds, loads, warms and stops the models; the API core asks it for a model by name or task."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._entries: dict[str, ModelEntry] = {}
        self._listeners: list[Callable[[ModelEntry], None]] = []
        self._loading_done = False

    # ---- discovery and loading --------------------------------------------------------------------
    def discover(self) -> list[ModelEntry]:
        """Read every manifest (without hashing, which load does) so models are listed at once as loading."""
        root = Path(self.settings.models_dir)
        if not root.is_dir():
            log.error("models dir %s does not exist: no model to serve", root)
            return []
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if not (folder / "manifest.json").is_file():
                log.info("skipping %s: no manifest.json", folder)
                continue
            try:
                manifest = read_manifest(folder, verify=False)
                entry = ModelEntry(manifest.name, folder, manifest=manifest)
            except Exception as exc:  # a broken manifest is that model's problem, not the service's
                entry = ModelEntry(folder.name, folder, ModelState.FAILED, error=str(exc))
            if entry.name in self._entries:
                first = self._entries[entry.name].directory
                entry = ModelEntry(
                    f"{entry.name}@{folder.name}",
                    folder,
                    ModelState.FAILED,
                    error=f"duplicate model name {entry.name!r} (already served from {first})",
                )
            self._entries[entry.name] = entry
            if entry.state is ModelState.FAILED:
                self._fail(entry, entry.error or "unknown error")
        return list(self._entries.values())

    async def load_all(self) -> None:
        """Load and warm each discovered model in a worker thread, one at a time (CPU is shared)."""
        for entry in list(self._entries.values()):
            if entry.state is ModelState.LOADING:
                await self._load(entry)
        self._loading_done = True
        ready = [e.name for e in self._entries.values() if e.state is ModelState.READY]
        log.info("model loading finished: %d ready (%s)", len(ready), ", ".join(ready) or "none")
        self._notify(None)

    async def _load(self, entry: ModelEntry) -> None:
        manifest = entry.manifest
        assert manifest is not None
        try:
            if manifest.task == "generate":
                engine = await asyncio.to_thread(load_generation_model, entry.directory, self.settings)
                if manifest.chat is not None:  # a template that does not parse refuses the model
                    entry.chat_template = ChatTemplate.compile(
                        entry.name, manifest.chat, _special_tokens(engine.tokenizer, manifest)
                    )
                await asyncio.to_thread(engine.start)
                entry.engine = engine
            else:
                clf = await asyncio.to_thread(load_classifier, entry.directory, self.settings)
                await asyncio.to_thread(clf.start)
                entry.classifier = clf
        except Exception as exc:  # bad hashes, bad graph, warm-up failure: refuse this model only
            self._fail(entry, f"{type(exc).__name__}: {exc}")
            return
        entry.state = ModelState.READY
        metrics.MODEL_READY.labels(model=entry.name).set(1)
        log.info("model %s (%s, %s) is ready", entry.name, manifest.task, entry.provider)
        self._notify(entry)

    def _fail(self, entry: ModelEntry, error: str) -> None:
        entry.state = ModelState.FAILED
        entry.error = error
        metrics.MODEL_READY.labels(model=entry.name).set(0)
        log.error("model %s from %s is NOT served: %s", entry.name, entry.directory, error)
        self._notify(entry)

    async def stop(self, drain_timeout: float) -> None:
        """Drain every served model (they finish in parallel), then mark them stopped."""
        served = [e for e in self._entries.values() if e.state is ModelState.READY]
        for entry in served:
            entry.state = ModelState.STOPPED
            self._notify(entry)
        await asyncio.gather(*(self._stop_one(e, drain_timeout) for e in served))

    async def _stop_one(self, entry: ModelEntry, drain_timeout: float) -> None:
        try:
            if entry.engine is not None:
                await entry.engine.stop(drain_timeout)
            if entry.classifier is not None:
                await entry.classifier.stop(drain_timeout)
        except Exception:
            log.exception("model %s did not stop cleanly", entry.name)

    # ---- queries ----------------------------------------------------------------------------------
    def entries(self) -> list[ModelEntry]:
        return list(self._entries.values())

    def get(self, name: str) -> ModelEntry | None:
        return self._entries.get(name)

    def default_name(self, task: str) -> str | None:
        """The configured default of the task, else the first of its models by name, failed ones last."""
        configured = (
            self.settings.default_generate_model
            if task == "generate"
            else self.settings.default_classify_model
        )
        if configured:
            return configured
        rank = {ModelState.READY: 0, ModelState.LOADING: 1, ModelState.STOPPED: 1, ModelState.FAILED: 2}
        candidates = sorted(
            (e for e in self._entries.values() if e.task == task), key=lambda e: (rank[e.state], e.name)
        )
        return candidates[0].name if candidates else None

    @property
    def loading_done(self) -> bool:
        return self._loading_done

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason) under the policy in the module docstring."""
        entries = self._entries.values()
        if not self._loading_done or any(e.state is ModelState.LOADING for e in entries):
            return False, "models are loading"
        if not any(e.state is ModelState.READY for e in entries):
            return False, "no model is ready"
        failed = [e.name for e in entries if e.state is ModelState.FAILED]
        if failed and self.settings.require_all_models:
            return False, f"models failed to load: {', '.join(failed)}"
        return True, "ready"

    # ---- change notifications (gRPC health follows them) ------------------------------------------
    def add_listener(self, listener: Callable[[ModelEntry | None], None]) -> None:
        """`listener(entry)` on every state change; `listener(None)` when loading finished."""
        self._listeners.append(listener)

    def _notify(self, entry: ModelEntry | None) -> None:
        for listener in self._listeners:
            try:
                listener(entry)
            except Exception:
                log.exception("registry listener failed")
