"""Write one artifact folder (model.onnx, tokenizer.json, manifest.json) from a torch model.

The graph is built, loaded back in onnxruntime alone, and checked against torch before anything is
published; the folder appears whole (written beside it, then renamed) or not at all.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from tokenizers import Tokenizer
from torch import nn

from training.export import manifest as mf
from training.export import parity
from training.export.half_storage import round_weights_to_float16, store_weights_as_float16
from training.export.onnx_classifier import build_rnn_classifier, build_transformer_classifier
from training.export.onnx_decoder import build_decoder, default_max_cache_len
from training.export.onnx_recurrent import build_recurrent_lm
from training.export.ort_decoder import make_session
from training.models.rnn import RNNLM, RNNClassifier
from training.models.transformer import PRESETS, TransformerClassifier, TransformerConfig, TransformerLM

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
# Protobuf's hard limit: a bigger model would need external data, which the contract rules out.
MAX_ONNX_BYTES = 2**31 - 1


def transformer_architecture(config: TransformerConfig) -> str:
    """The preset whose flavour (positions, norm, MLP) the config has, else plain "transformer"."""
    flavour = {"positions": config.positions, "norm": config.norm, "mlp": config.mlp}
    for name, preset in PRESETS.items():
        if all(preset[key] == value for key, value in flavour.items()):
            return name
    return "transformer"


@dataclass(frozen=True)
class GraphSpec:
    """What one model type exports to: its graph, the manifest facts about it, and its parity check."""

    graph: onnx.ModelProto
    task: str
    architecture: str
    context_length: int | None
    vocab_size: int
    check: Callable[..., dict[str, float]]
    kv_cache: dict[str, Any] | None = None
    state: dict[str, Any] | None = None


def describe(model: nn.Module, max_cache_len: int | None = None) -> GraphSpec:
    """Build the graph of any supported model and say how the manifest describes it."""
    if isinstance(model, TransformerLM):
        c = model.config
        max_len = max_cache_len or default_max_cache_len(c)
        kv = {"num_layers": c.n_layer, "kv_heads": c.n_kv_head, "head_dim": c.head_dim, "max_len": max_len}
        return GraphSpec(
            build_decoder(model, max_len),
            "generate",
            transformer_architecture(c),
            c.context_length,
            c.vocab_size,
            parity.check_decoder,
            kv_cache={**kv, "dtype": "float32"},
        )
    if isinstance(model, RNNLM):
        c = model.config
        state = {"num_layers": c.num_layers, "hidden_size": c.hidden_size, "cell": c.cell}
        graph = build_recurrent_lm(model)
        return GraphSpec(graph, "generate", c.cell, None, c.vocab_size, parity.check_recurrent, state=state)
    if isinstance(model, TransformerClassifier):
        c = model.lm.config
        graph = build_transformer_classifier(model)
        architecture = transformer_architecture(c)
        return GraphSpec(
            graph, "classify", architecture, c.context_length, c.vocab_size, parity.check_classifier
        )
    if isinstance(model, RNNClassifier):
        c = model.config
        graph = build_rnn_classifier(model)
        return GraphSpec(graph, "classify", c.cell, None, c.vocab_size, parity.check_classifier)
    raise TypeError(f"cannot export a {type(model).__name__}")


@contextmanager
def published(out_dir: Path) -> Iterator[Path]:
    """A staging folder beside `out_dir` that replaces it only when the block succeeds.

    On failure it is removed: a half-made model must never sit where the registry looks.
    """
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)


def export_model(
    model: nn.Module,
    tokenizer_path: Path,
    out_dir: Path,
    name: str,
    metrics: dict[str, Any] | None = None,
    training_record: dict[str, Any] | None = None,
    *,
    architecture: str | None = None,
    labels: list[str] | None = None,
    append_eos: bool | None = None,
    max_cache_len: int | None = None,
    parity_seed: int = 0,
    weights: str = "float32",
    chat: dict[str, Any] | None = None,
    preprocessing: dict[str, Any] | None = None,
) -> Path:
    """Build, verify and publish `out_dir/{model.onnx,tokenizer.json,manifest.json}`; returns out_dir.

    `training_record` is `manifest.training_section(...)`'s dict; `append_eos` defaults to True for a
    Transformer classifier (its classification token). Raises `parity.ParityError` above tolerance.
    `weights="float16"` rounds the model's weights in place and stores them in half the bytes.
    `chat` is `manifest.chat_section(...)`'s dict, for a generation model with a chat template.
    `preprocessing` is `manifest.preprocessing_section(...)`'s dict, for a classifier.
    """
    model = model.eval()
    if weights == "float16":
        round_weights_to_float16(model)
    spec = describe(model, max_cache_len)
    if weights == "float16":
        stored = store_weights_as_float16(spec.graph)
        log.info("%s: %d initializers stored as float16", name, stored)
    if spec.task == "classify" and not labels:
        raise ValueError("a classifier export needs its label names")
    if chat is not None and spec.task != "generate":
        raise ValueError(f"{name}: only a generation model can have a chat template")
    vocab = Tokenizer.from_file(str(tokenizer_path)).get_vocab_size()
    if vocab > spec.vocab_size:
        raise ValueError(f"{name}: the tokenizer has {vocab} tokens but the model only {spec.vocab_size}")
    graph = spec.graph
    if graph.ByteSize() > MAX_ONNX_BYTES:
        raise ValueError(f"{name}: {graph.ByteSize()} bytes of ONNX exceed protobuf's 2 GiB; make it smaller")
    out_dir = Path(out_dir)
    with published(out_dir) as staging:
        onnx.save_model(graph, str(staging / MODEL_FILE))
        diffs = spec.check(model, make_session(staging / MODEL_FILE), seed=parity_seed)
        log.info("%s: parity max |diff| per case %s", name, diffs)
        shutil.copyfile(tokenizer_path, staging / TOKENIZER_FILE)
        if append_eos is None:
            append_eos = isinstance(model, TransformerClassifier)
        manifest = mf.build_manifest(
            name=name,
            task=spec.task,
            architecture=architecture or spec.architecture,
            parameters=sum(p.numel() for p in model.parameters()),
            context_length=spec.context_length,
            onnx_info={**mf.onnx_section(graph, MODEL_FILE, spec.kv_cache, spec.state), "weights": weights},
            tokenizer_info=mf.tokenizer_section(staging / TOKENIZER_FILE, TOKENIZER_FILE, append_eos),
            labels=list(labels) if labels else None,
            metrics={**(metrics or {}), "parity_max_abs_diff": max(diffs.values())},
            training=training_record or mf.training_section(None, [], None, None),
            folder=staging,
            chat=chat,
            preprocessing=preprocessing,
        )
        mf.write_manifest(staging, manifest)
    return out_dir
