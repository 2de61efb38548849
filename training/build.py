"""Build a model from its config dict: the one place training, eval and export agree on.

A run stores `model_config.json`: `kind` ("transformer_lm" | "rnn_lm" | "transformer_classifier" |
"rnn_classifier"), every field of the model's dataclass, and for classifiers `num_labels` and the
label names. Transformer kinds also keep `preset` (the architecture name for the manifest) and the
Transformer classifier its `head_dropout` and `append_eos` (its input ends with `<|eos|>`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from torch import nn

from training.checkpoint import WEIGHTS_FILE, load_weights
from training.models.rnn import RNNLM, RNNClassifier, RNNClassifierConfig, RNNConfig
from training.models.transformer import TransformerClassifier, TransformerConfig, TransformerLM

MODEL_CONFIG_FILE = "model_config.json"
MODEL_KINDS = ("transformer_lm", "rnn_lm", "transformer_classifier", "rnn_classifier")
CLASSIFIER_KINDS = ("transformer_classifier", "rnn_classifier")
# Keys of model_config.json (or a recipe's [model]) that are not dataclass fields.
_EXTRA_KEYS = {
    "transformer_lm": {"preset"},
    "transformer_classifier": {
        "preset",
        "num_labels",
        "head_dropout",
        "head_pooling",
        "labels",
        "append_eos",
        "init_from",
    },
    "rnn_lm": set(),
    "rnn_classifier": {"labels", "init_from"},
}
_DATACLASS = {
    "transformer_lm": TransformerConfig,
    "transformer_classifier": TransformerConfig,
    "rnn_lm": RNNConfig,
    "rnn_classifier": RNNClassifierConfig,
}


def _fields(cls: type) -> set[str]:
    return {field.name for field in dataclasses.fields(cls)}


def _check_keys(kind: str, config: dict[str, Any]) -> None:
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {MODEL_KINDS}")
    unknown = set(config) - {"kind"} - _fields(_DATACLASS[kind]) - _EXTRA_KEYS[kind]
    if unknown:
        raise ValueError(f"{kind}: unknown model keys {sorted(unknown)}")


def resolve_model_config(
    section: dict[str, Any], vocab_size: int, labels: list[str] | None = None
) -> dict[str, Any]:
    """Turn a recipe's [model] section into a complete model_config dict (presets and vocab filled in).

    A Transformer classifier with `init_from = "<LM run dir>"` takes the LM's shape from that run,
    so only `dropout`, `head_dropout` and `head_pooling` may be given beside it; an RNN classifier's
    `init_from` (an `rnn_lm` run) fixes its cell and sizes, leaving dropout, direction and pooling to
    the recipe.
    """
    kind = section["kind"]
    _check_keys(kind, section)
    given = {key: value for key, value in section.items() if key != "kind"}
    extras: dict[str, Any] = {}
    if kind in ("transformer_lm", "transformer_classifier"):
        init_from = given.pop("init_from", "")
        if init_from:
            base = read_model_config(Path(init_from))
            if base["kind"] != "transformer_lm":
                raise ValueError(f"init_from must name a transformer_lm run, not a {base['kind']}")
            own = ("dropout", "head_dropout", "head_pooling")
            shaped = {key: value for key, value in given.items() if key not in own}
            if shaped:
                raise ValueError(f"with init_from the LM shape comes from {init_from}; drop {sorted(shaped)}")
            given = {**{k: v for k, v in base.items() if k != "kind"}, **given}
            extras["init_from"] = str(init_from)
        preset = given.pop("preset", "llama")
        head_dropout = given.pop("head_dropout", 0.1)
        head_pooling = given.pop("head_pooling", "last")
        config = TransformerConfig.from_preset(preset, **{**given, "vocab_size": vocab_size})
        extras["preset"] = preset
        if kind == "transformer_classifier":
            extras.update(head_dropout=head_dropout, head_pooling=head_pooling, append_eos=True)
    elif kind == "rnn_lm":
        config = RNNConfig(**{**given, "vocab_size": vocab_size})
    else:
        init_from = given.pop("init_from", "")
        if init_from:
            given = {**recurrent_shape_from(Path(init_from), given), **given}
            extras["init_from"] = str(init_from)
        config = RNNClassifierConfig(**{**given, "vocab_size": vocab_size, "num_labels": len(labels or [])})
    if kind in CLASSIFIER_KINDS:
        if not labels:
            raise ValueError("a classifier needs its label names")
        extras.update(num_labels=len(labels), labels=list(labels))
    return {"kind": kind, **dataclasses.asdict(config), **extras}


def recurrent_shape_from(lm_run: Path, given: dict[str, Any]) -> dict[str, Any]:
    """An RNN classifier started from an `rnn_lm` run takes that LM's cell and sizes (ULMFiT-style)."""
    base = read_model_config(lm_run)
    if base["kind"] != "rnn_lm":
        raise ValueError(f"an rnn_classifier's init_from must name an rnn_lm run, not a {base['kind']}")
    shape = ("cell", "embed_dim", "hidden_size", "num_layers")
    clashing = sorted(key for key in shape if key in given and given[key] != base[key])
    if clashing:
        raise ValueError(f"with init_from the shape comes from {lm_run}; drop {clashing}")
    return {key: base[key] for key in shape}


def build_model(kind: str, config: dict[str, Any]) -> nn.Module:
    """A freshly initialised model of `kind` from a model_config dict (extra keys are ignored)."""
    _check_keys(kind, config)
    fields = {key: value for key, value in config.items() if key in _fields(_DATACLASS[kind])}
    if kind == "transformer_lm":
        return TransformerLM(TransformerConfig(**fields))
    if kind == "transformer_classifier":
        lm = TransformerLM(TransformerConfig(**fields))
        return TransformerClassifier(
            lm,
            int(config["num_labels"]),
            float(config.get("head_dropout", 0.1)),
            str(config.get("head_pooling", "last")),
        )
    if kind == "rnn_lm":
        return RNNLM(RNNConfig(**fields))
    return RNNClassifier(RNNClassifierConfig(**fields))


def write_model_config(run_dir: Path, config: dict[str, Any]) -> Path:
    path = run_dir / MODEL_CONFIG_FILE
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def read_model_config(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / MODEL_CONFIG_FILE).read_text())


def load_run_model(run_dir: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of a run folder (weights from its model.safetensors), in eval mode."""
    config = read_model_config(run_dir)
    model = build_model(config["kind"], config)
    load_weights(model, run_dir / WEIGHTS_FILE)
    return model.eval(), config
