"""Training tasks and the factory that builds the right one for a recipe's model kind."""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer

from training.data import load_classification_corpus, load_lm_corpus
from training.distributed import Ranks
from training.long_documents import LONG_DOCUMENT_MODES, POOLINGS, TRUNCATIONS, split_windows, truncate
from training.recipe import Recipe
from training.tasks.base import Task, improved
from training.tasks.classification import ClassificationTask
from training.tasks.language_model import RecurrentLMTask, TransformerLMTask
from training.tokenizer import EOS_ID, PAD_ID, decode, encode

__all__ = [
    "ClassificationTask",
    "RecurrentLMTask",
    "Task",
    "TransformerLMTask",
    "classifier_windows",
    "encode_classifier_text",
    "encode_classifier_windows",
    "improved",
    "make_task",
    "training_texts",
]


def training_texts(recipe: Recipe) -> tuple[list[str], list[str]]:
    """(texts a tokenizer is trained on, label names): only the training split, never validation."""
    if recipe.kind in ("transformer_lm", "rnn_lm"):
        return [load_lm_corpus(recipe.data).train], []
    corpus = load_classification_corpus(recipe.data)
    return [example.text for example in corpus.train], corpus.labels


def encode_classifier_text(
    tokenizer: Tokenizer, text: str, max_tokens: int, append_eos: bool, truncation: str
) -> list[int]:
    """Token ids of one example, cut to `max_tokens` (training/long_documents.py), EOS appended if asked."""
    ids = truncate(encode(tokenizer, text), max_tokens - (1 if append_eos else 0), truncation)
    return [*ids, EOS_ID] if append_eos else ids


def encode_classifier_windows(
    tokenizer: Tokenizer,
    text: str,
    max_tokens: int,
    append_eos: bool,
    truncation: str,
    long_documents: str = "truncate",
    window_stride: int = 0,
) -> list[list[int]]:
    """The classifier inputs of one text under the preprocessing contract (docs/artifact-contract.md):
    one truncated input, or windows of `max_tokens` (EOS included) `window_stride` ids apart."""
    if long_documents not in LONG_DOCUMENT_MODES:
        raise ValueError(f"long_documents must be one of {LONG_DOCUMENT_MODES}, not {long_documents!r}")
    if long_documents == "truncate":
        return [encode_classifier_text(tokenizer, text, max_tokens, append_eos, truncation)]
    room = max_tokens - (1 if append_eos else 0)
    windows = split_windows(encode(tokenizer, text), room, window_stride or room)
    return [[*window, EOS_ID] if append_eos else window for window in windows]


def classifier_windows(
    recipe: Recipe, model_config: dict[str, Any], tokenizer: Tokenizer, text: str
) -> list[list[int]]:
    """One text's classifier inputs under a run's recipe: the contract the export records."""
    task = recipe.task
    max_tokens = task.max_tokens
    if recipe.kind == "transformer_classifier":
        max_tokens = min(max_tokens, int(model_config["context_length"]))
    append_eos = bool(model_config.get("append_eos", False))
    return encode_classifier_windows(
        tokenizer, text, max_tokens, append_eos, task.truncation, task.long_documents, task.window_stride
    )


def _stream(tokenizer: Tokenizer, text: str) -> torch.Tensor:
    return torch.tensor(encode(tokenizer, text), dtype=torch.long)


def make_task(
    recipe: Recipe, tokenizer: Tokenizer, model_config: dict[str, Any], ranks: Ranks | None = None
) -> Task:
    """Read the recipe's data, tokenize it, and wrap it in the task its model kind trains on.

    Every rank reads and tokenizes the whole corpus (as with a DistributedSampler over a map-style
    data set) and then trains on its share of each global batch only."""
    kind, optim, task = recipe.kind, recipe.optim, recipe.task
    sharing = {"ranks": ranks or Ranks(), "micro_batch_size": optim.micro_batch_size}
    if kind in ("transformer_lm", "rnn_lm"):
        corpus = load_lm_corpus(recipe.data)
        val_tokens = _stream(tokenizer, corpus.val)
        subset_tokens = min(task.eval_tokens, val_tokens.numel())
        subset_chars = len(decode(tokenizer, val_tokens[:subset_tokens].tolist()))
        common = {"val_tokens": val_tokens, "val_chars": len(corpus.val), "subset_tokens": subset_tokens}
        if kind == "transformer_lm":
            return TransformerLMTask(
                train_tokens=_stream(tokenizer, corpus.train),
                context_length=int(model_config["context_length"]),
                batch_size=optim.batch_size,
                seed=optim.seed,
                subset_chars=subset_chars,
                eval_batch_size=task.eval_batch_size,
                **common,
                **sharing,
            )
        return RecurrentLMTask(
            train_tokens=_stream(tokenizer, corpus.train),
            batch_size=optim.batch_size,
            bptt=task.bptt,
            subset_chars=subset_chars,
            **common,
            **sharing,
        )
    if task.truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, not {task.truncation!r}")
    if task.pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, not {task.pooling!r}")
    corpus = load_classification_corpus(recipe.data)

    def windows(examples: list) -> list[list[list[int]]]:
        return [classifier_windows(recipe, model_config, tokenizer, example.text) for example in examples]

    train_windows, dev_windows = windows(corpus.train), windows(corpus.dev)
    # Training: every window is an example with its text's label (one per text when truncating).
    return ClassificationTask(
        train_ids=[window for text in train_windows for window in text],
        train_labels=[e.label for e, text in zip(corpus.train, train_windows, strict=True) for _ in text],
        dev_ids=[text[0] for text in dev_windows],
        dev_windows=dev_windows,
        pooling=task.pooling,
        dev_labels=[example.label for example in corpus.dev],
        batch_size=optim.batch_size,
        pad_id=PAD_ID,
        seed=optim.seed,
        aux_lm_weight=task.aux_lm_weight if kind == "transformer_classifier" else None,
        eval_batch_size=task.eval_batch_size,
        length_buckets=task.length_buckets,
        **sharing,
    )
