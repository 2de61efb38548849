"""Recipes: the TOML files in training/configs that say how a default model was made.

A recipe has a `name` (the run folder and export name) and these sections: `[data]`, `[tokenizer]`,
`[model]` (its `kind` plus the model dataclass fields, passed through to `training.build`),
`[optim]`, `[task]` and, for a chat-capable generator, `[chat]`. Typed sections catch a misspelt key
before a 20-minute run, not after it. The resolved recipe (defaults filled in, overrides applied) is
written to each run as config.toml.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DataConfig:
    """Where the corpus is and how it is split (see training/data.py for the formats)."""

    format: str = "text"  # "text" | "labelled_lines" | "folders"
    path: str = ""  # text file, or the root of a folder corpus
    train_fraction: float = 0.9  # text: first fraction of characters trains, the rest validates
    train: str = ""  # labelled_lines: training file
    dev: str = ""  # labelled_lines: model-selection file
    classes: list[str] = field(default_factory=list)  # folders: class sub-folders, label i = classes[i]
    train_folds: str = ""  # folders: e.g. "0-799" (cvNNN prefixes); empty = every fold
    dev_folds: str = ""  # folders: e.g. "800-899"
    labels: list[str] = field(default_factory=list)  # classifier label names, in label-index order
    # LMs: labelled-lines files (e.g. sst2/train.txt) whose texts, labels dropped, join the training text.
    extra_train_texts: list[str] = field(default_factory=list)
    # Classifiers (multi-task): a folder corpus (classes = its sub-folders, in label order) whose
    # `extra_train_folds` join the training examples, e.g. polarity-v2 reviews beside SST-2 sentences.
    extra_train_folders: str = ""
    extra_train_folds: str = ""


@dataclass(frozen=True)
class TokenizerConfig:
    """Train a tokenizer on the training split, or reuse one (e.g. the LM a classifier starts from)."""

    kind: str = "bpe"  # "bpe" | "char"
    vocab_size: int = 1024  # bpe only
    path: str = ""  # an existing tokenizer.json to reuse instead of training one


@dataclass(frozen=True)
class OptimConfig:
    """AdamW, warmup + cosine, clipping, and the step/time budget of the run."""

    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; 0 turns clipping off
    batch_size: int = 32  # the global batch: under torchrun the ranks share it, it is not per rank
    micro_batch_size: int = 0  # most rows a rank computes at once (gradient accumulation); 0 = no limit
    max_steps: int = 5000
    max_minutes: float = 0.0  # wall-clock budget of the training loop; 0 = none
    eval_every: int = 250
    checkpoint_every: int = 250
    log_every: int = 10
    seed: int = 1337
    threads: int = 0  # torch intra-op threads; 0 = $SEQSERVE_TORCH_THREADS or every core


@dataclass(frozen=True)
class TaskConfig:
    """Knobs of the individual tasks; each task reads only its own."""

    bptt: int = 128  # rnn_lm: tokens per truncated-BPTT chunk
    eval_tokens: int = 32768  # LMs: size of the fixed validation subset used for periodic evals
    eval_batch_size: int = 32
    aux_lm_weight: float = 0.5  # transformer_classifier: lambda in L = L_cls + lambda * L_lm
    patience: int = 5  # classifiers: evals without a better dev accuracy before stopping
    max_tokens: int = 256  # classifiers: longest input kept (an appended EOS included)
    truncation: str = "head"  # classifiers: keep the "head", the "tail" or "head_tail" of a long text
    length_buckets: int = 0  # classifiers: 0 = plain shuffled batches; k = batch pools of k by length
    # Classifiers, a text longer than max_tokens: "truncate" (by `truncation`) or "windows" of
    # max_tokens, `window_stride` tokens apart (0: the window's room, no overlap), each trained
    # with the text's label and, when evaluated or served, pooled by `pooling` (long_documents.py).
    long_documents: str = "truncate"
    window_stride: int = 0
    pooling: str = "mean"


@dataclass(frozen=True)
class ChatConfig:
    """A generation model's chat template, copied into its manifest at export (docs/artifact-contract.md)
    so the service can answer /v1/chat/completions with it."""

    template: str = ""  # a Jinja file, relative to training/configs; empty: the model has no chat
    stop: list[str] = field(default_factory=list)  # stop strings chat requests get when they name none


@dataclass(frozen=True)
class Recipe:
    """A whole run description, as read from TOML and resolved."""

    name: str
    model: dict[str, Any]
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    export_name: str = ""
    export: bool = True  # false: a run other recipes start from (e.g. LM pre-training), not a served model
    export_weights: str = "float32"  # "float16": rounded, stored in half the bytes (half_storage.py)

    @property
    def kind(self) -> str:
        return str(self.model["kind"])

    def with_overrides(self, **optim_overrides: Any) -> Recipe:
        """Apply CLI overrides such as max_steps or max_minutes (None means keep the recipe's)."""
        changes = {key: value for key, value in optim_overrides.items() if value is not None}
        return dataclasses.replace(self, optim=dataclasses.replace(self.optim, **changes))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "export_name": self.export_name,
            "export": self.export,
            "export_weights": self.export_weights,
            "data": dataclasses.asdict(self.data),
            "tokenizer": dataclasses.asdict(self.tokenizer),
            "model": dict(self.model),
            "optim": dataclasses.asdict(self.optim),
            "task": dataclasses.asdict(self.task),
            "chat": dataclasses.asdict(self.chat),
        }


WEIGHT_DTYPES = ("float32", "float16")

SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "tokenizer": TokenizerConfig,
    "optim": OptimConfig,
    "task": TaskConfig,
    "chat": ChatConfig,
}


def _section(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known keys are {sorted(known)}")
    return cls(**values)


def _weights_dtype(value: Any, source: str) -> str:
    if value not in WEIGHT_DTYPES:
        raise ValueError(f"{source}: export_weights must be one of {list(WEIGHT_DTYPES)}, not {value!r}")
    return str(value)


def recipe_from_dict(raw: dict[str, Any], source: str = "<recipe>") -> Recipe:
    """Validate and type a parsed recipe."""
    extra = sorted(set(raw) - {"name", "export_name", "export", "export_weights", "model", *SECTIONS})
    if extra:
        raise ValueError(f"{source}: unknown top-level keys {extra}")
    if "name" not in raw or "model" not in raw or "kind" not in raw["model"]:
        raise ValueError(f"{source}: a recipe needs `name` and a [model] section with `kind`")
    sections = {key: _section(cls, raw.get(key, {}), f"{source} [{key}]") for key, cls in SECTIONS.items()}
    return Recipe(
        name=raw["name"],
        model=dict(raw["model"]),
        export_name=raw.get("export_name") or raw["name"],
        export=bool(raw.get("export", True)),
        export_weights=_weights_dtype(raw.get("export_weights", "float32"), source),
        **sections,
    )


def load_recipe(path: str | Path) -> Recipe:
    """Parse a recipe TOML file."""
    with open(path, "rb") as handle:
        return recipe_from_dict(tomllib.load(handle), str(path))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are a subset of TOML basic-string escapes.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def recipe_to_toml(recipe: Recipe) -> str:
    """The resolved recipe as TOML, so a run folder says exactly what produced it."""
    data = recipe.to_dict()
    lines = [
        f"name = {_toml_value(data.pop('name'))}",
        f"export_name = {_toml_value(data.pop('export_name'))}",
        f"export = {_toml_value(data.pop('export'))}",
        f"export_weights = {_toml_value(data.pop('export_weights'))}",
    ]
    for section, values in data.items():
        lines += ["", f"[{section}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items() if value is not None]
    return "\n".join(lines) + "\n"
