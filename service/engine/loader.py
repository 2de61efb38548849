"""Build an engine or a classifier batcher from an artifact folder, independent of any registry."""

from __future__ import annotations

import logging
from pathlib import Path

from tokenizers import Tokenizer

from service.engine import capacity
from service.engine.batcher import ClassifierBatcher
from service.engine.constraints import ConstraintLimits
from service.engine.engine import GenerationEngine
from service.engine.errors import ManifestError
from service.engine.kv_cache import KVCacheSpec
from service.engine.manifest import Manifest, read_manifest
from service.engine.preprocessing import policy_from_manifest
from service.engine.recurrent_runner import RecurrentRunner
from service.engine.runner import ModelRunner
from service.engine.runtime import ModelSession, open_variant_session
from service.engine.transformer_runner import TransformerRunner
from service.settings import Settings

log = logging.getLogger(__name__)


def load_generation_model(model_dir: Path, settings: Settings) -> GenerationEngine:
    """Verify the files, open the session and preallocate the slots; call `start()` to warm up and serve."""
    manifest = read_manifest(Path(model_dir))
    if manifest.task != "generate":
        raise ManifestError(f"{manifest.name}: task is {manifest.task!r}, not 'generate'")
    session = open_session(manifest, settings)
    runner = build_runner(manifest, session, settings.max_slots, settings.kv_cache_mb << 20)
    tokenizer = Tokenizer.from_file(str(manifest.tokenizer_path))
    return GenerationEngine(
        name=manifest.name,
        runner=runner,
        tokenizer=tokenizer,
        eos_id=manifest.tokenizer.get("eos_id"),
        max_queue=settings.max_queue,
        max_queue_time_s=settings.max_queue_time_s or None,
        max_prompt_tokens=settings.max_prompt_tokens,
        recurrent_max_prompt_tokens=settings.recurrent_max_prompt_tokens,
        context_length=manifest.context_length,
        max_new_tokens=settings.max_new_tokens,
        prefill_chunk_tokens=settings.prefill_chunk_tokens,
        warmup=settings.warmup,
        constraint_limits=ConstraintLimits(
            max_chars=settings.max_constraint_chars,
            compile_timeout_s=settings.constraint_compile_timeout_s,
        ),
        grammar_cache_size=settings.grammar_cache_size,
    )


def open_session(manifest: Manifest, settings: Settings) -> ModelSession:
    """The variant for the provider really in use (see runtime.open_variant_session)."""
    return open_variant_session(
        manifest, settings.provider, settings.intra_op_threads, settings.allow_spinning
    )


def kv_cache_dtype(manifest: Manifest, session: ModelSession) -> str:
    """The KV buffers' dtype: what the loaded variant's manifest entry says of its past inputs (or
    `kv_cache.dtype`), which must be what the graph itself declares; float32 when the manifest is silent.

    A mismatch refuses the model: buffers of the wrong itemsize bound by pointer would be read as
    garbage, or overrun, without any error from ORT.
    """
    variant = session.variant or manifest.variant(session.provider)
    past = "past_key_values.0.key"
    stated = variant.input_dtype(past) or variant.kv_cache_dtype or (variant.kv_cache or {}).get("dtype")
    actual = session.input_dtype(past).name if past in session.input_names else None
    if stated and actual and str(stated) != actual:
        raise ManifestError(
            f"{manifest.name}: the manifest gives {past} as {stated} but {variant.file} declares {actual}"
        )
    return str(stated or actual or "float32")


def build_runner(
    manifest: Manifest, session: ModelSession, max_slots: int | None, kv_budget_bytes: int = 1 << 30
) -> ModelRunner:
    """A KV-cache runner for Transformers (`kv_cache`), a state runner for RNNs (`state`), from the
    loaded variant's manifest entry (the `onnx` section's when the entry does not say).

    `max_slots` None sizes the slots from `kv_budget_bytes` (capacity.slot_count). The cache rows
    are as long as the graph declares its past (a fixed dimension of the exported graph).
    """
    variant = session.variant or manifest.variant(session.provider)
    kv = variant.kv_cache
    state = variant.state
    vocab = _vocab_size(manifest)
    if kv:
        max_len = int(kv["max_len"])
        spec = KVCacheSpec(
            int(kv["num_layers"]),
            int(kv["kv_heads"]),
            int(kv["head_dim"]),
            max_len,
            kv_cache_dtype(manifest, session),
        )
        slots = capacity.slot_count(max_slots, spec.bytes_per_slot, kv_budget_bytes, session.device)
        return TransformerRunner(session, spec, slots, vocab, int(manifest.tokenizer.get("pad_id", 0)))
    if state:
        layers, hidden, cell = int(state["num_layers"]), int(state["hidden_size"]), str(state["cell"])
        itemsize = session.input_dtype("state_h").itemsize if "state_h" in session.input_names else 4
        per_slot = layers * hidden * itemsize * (2 if cell == "lstm" else 1)
        slots = capacity.slot_count(max_slots, per_slot, kv_budget_bytes, session.device)
        return RecurrentRunner(session, layers, hidden, cell, slots, vocab)
    raise ManifestError(f"{manifest.name}: a generate model needs onnx.kv_cache or onnx.state")


def _vocab_size(manifest: Manifest) -> int:
    """The logits width (the graph's vocab), which may exceed the tokenizer's vocab."""
    shape = (manifest.onnx.get("outputs") or {}).get("logits", {}).get("shape") or []
    if shape and isinstance(shape[-1], int):
        return int(shape[-1])
    return manifest.vocab_size


def load_classifier(model_dir: Path, settings: Settings) -> ClassifierBatcher:
    """Verify the files and open the classifier; call `start()` to warm up and serve."""
    manifest = read_manifest(Path(model_dir))
    if manifest.task != "classify" or not manifest.labels:
        raise ManifestError(
            f"{manifest.name}: not a classifier (task {manifest.task!r}, labels {manifest.labels})"
        )
    policy = policy_from_manifest(manifest.raw, manifest.context_length)  # before the session: fail fast
    session = open_session(manifest, settings)
    tok = manifest.tokenizer
    return ClassifierBatcher(
        name=manifest.name,
        session=session,
        tokenizer=Tokenizer.from_file(str(manifest.tokenizer_path)),
        labels=manifest.labels,
        pad_id=int(tok.get("pad_id", 0)),
        eos_id=tok.get("eos_id"),
        append_eos=bool(tok.get("append_eos", False)),
        max_length=policy.max_tokens,
        max_batch=settings.classifier_max_batch,
        max_delay_ms=settings.classifier_max_delay_ms,
        max_queue=max(settings.max_queue * settings.classifier_max_batch, settings.classifier_max_batch),
        policy=policy,
        max_windows_per_text=settings.classifier_max_windows_per_text,
        max_tokens_per_request=settings.classifier_max_tokens_per_request,
    )
