"""The preprocessing contract: a classifier trained on windows of long texts is exported, served, and
the service's answers equal the training-side evaluation of the same texts."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.tiny_models import TRAINABLE_LLAMA_LM
from service.engine import load_classifier
from service.engine.preprocessing import calibration_from_section
from service.settings import Settings
from training.calibrate import calibrate_artifact
from training.evaluate import choose_pooling, document_window_log_probs, evaluate_documents, run_pooling
from training.export import export_run
from training.long_documents import pool_log_probabilities
from training.recipe import recipe_from_dict
from training.train import train

TINY_LSTM_LM = {"kind": "rnn_lm", "cell": "lstm", "embed_dim": 16, "hidden_size": 24, "num_layers": 1}
GOOD, BAD = "a fine lovely film, great fun. ", "a dull awful film, bad and boring. "
MAX_TOKENS, STRIDE = 24, 17  # characters: most documents below make several overlapping windows


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def write_corpus(root: Path) -> None:
    """Sentences (labelled lines) and a two-class folder corpus of documents in cvNNN folds, of
    lengths around the window: exactly one window, one character more, and several windows."""
    lines = [f"1 {GOOD.strip()}", f"0 {BAD.strip()}"] * 4
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "dev.txt").write_text("\n".join(lines[:2]) + "\n")
    (root / "lm.txt").write_text((GOOD + BAD) * 30)
    for label, (name, text) in enumerate((("neg", BAD), ("pos", GOOD))):
        folder = root / "docs" / name
        folder.mkdir(parents=True)
        for fold in range(6):
            body = (text * 4)[: [MAX_TOKENS - 1, MAX_TOKENS, 60, 90, 120, 45][fold]]
            (folder / f"cv{fold:03d}_{label}.txt").write_text(body)


def recipe(name: str, model: dict[str, Any], data: dict[str, Any], task: dict[str, Any]) -> Any:
    optim = {"lr": 1e-2, "min_lr": 1e-3, "warmup_steps": 2, "batch_size": 4, "eval_every": 5}
    return recipe_from_dict(
        {
            "name": name,
            "data": data,
            "tokenizer": {"kind": "char"},
            "model": model,
            "optim": {**optim, "max_steps": 10, "threads": 1},
            "task": {"patience": 3, "bptt": 16, **task},
        }
    )


def train_windowed_classifier(tmp_path: Path, lm: dict[str, Any], pooling: str = "mean") -> Path:
    """A tiny LM, then a classifier fine-tuned from it on sentences and windows of documents."""
    write_corpus(tmp_path)
    train(recipe("lm", lm, {"path": str(tmp_path / "lm.txt")}, {}), tmp_path, show_progress=False)
    kind = "transformer_classifier" if lm["kind"] == "transformer_lm" else "rnn_classifier"
    data = {
        "format": "labelled_lines",
        "train": str(tmp_path / "train.txt"),
        "dev": str(tmp_path / "dev.txt"),
        "labels": ["negative", "positive"],
        "classes": ["neg", "pos"],
        "extra_train_folders": str(tmp_path / "docs"),
        "extra_train_folds": "0-1",
    }
    windows = {
        "max_tokens": MAX_TOKENS,
        "long_documents": "windows",
        "window_stride": STRIDE,
        "pooling": pooling,
    }
    model = {"kind": kind, "init_from": str(tmp_path / "lm"), "dropout": 0.0}
    train(recipe("cls", model, data, windows), tmp_path, show_progress=False)
    return tmp_path / "cls"


def heldout_texts(tmp_path: Path) -> list[str]:
    """The documents of folds 4-5, in the order training reads them."""
    return [
        path.read_text().strip()
        for name in ("neg", "pos")
        for path in sorted((tmp_path / "docs" / name).glob("cv00[45]_*"))
    ]


def serve(artifact: Path, texts: list[str]) -> list:
    batcher = load_classifier(artifact, Settings(intra_op_threads=1, classifier_max_delay_ms=5))

    async def classify() -> list:
        batcher.start()
        try:
            return await batcher.classify(texts)  # every document's windows in shared batches
        finally:
            await batcher.stop()

    return asyncio.run(classify())


@pytest.mark.parametrize("lm", [TRAINABLE_LLAMA_LM, TINY_LSTM_LM], ids=["transformer", "lstm"])
def test_served_answers_equal_the_training_side_evaluation(tmp_path: Path, lm: dict[str, Any]) -> None:
    run = train_windowed_classifier(tmp_path, lm)

    chosen = choose_pooling(run, "2-3")
    assert run_pooling(run) == chosen["pooling"] and set(chosen["selection_accuracy"]) == {"mean", "max"}
    with pytest.raises(ValueError, match="overlap"):
        choose_pooling(run, "1-2")  # fold 1 was trained on

    artifact = export_run(run, tmp_path / "exported")
    section = json.loads((artifact / "manifest.json").read_text())["preprocessing"]
    assert section["max_tokens"] == MAX_TOKENS and section["window_stride"] == STRIDE
    assert section["long_documents"] == "windows" and section["pooling"] == chosen["pooling"]

    # Training side: each held-out document's windows, pooled by the recorded rule.
    grouped, labels = document_window_log_probs(run, "4-5")
    assert max(len(rows) for rows in grouped) > 1, "some documents must span several windows"
    expected = [[math.exp(v) for v in pool_log_probabilities(rows, chosen["pooling"])] for rows in grouped]
    served = serve(artifact, heldout_texts(tmp_path))
    for want, got in zip(expected, served, strict=True):
        assert [got.probabilities["negative"], got.probabilities["positive"]] == pytest.approx(want, abs=1e-5)
        assert got.label == ("positive" if want[1] > want[0] else "negative")
    accuracy = sum(
        int(r.label == ("positive" if y else "negative")) for r, y in zip(served, labels, strict=True)
    )
    assert evaluate_documents(run, "4-5")["heldout_accuracy"] == pytest.approx(accuracy / len(labels))


def test_a_calibrated_document_rule_is_served_as_training_scores_it(tmp_path: Path) -> None:
    """`training calibrate` tunes the rule on selection folds and writes it to the manifest; the
    service then pools each document's windows by it, equal to the training side's torch windows
    pooled by the same rule. One-window texts are left as they were."""
    run = train_windowed_classifier(tmp_path, TRAINABLE_LLAMA_LM, pooling="mean")
    artifact = export_run(run, tmp_path / "exported")
    before = serve(artifact, heldout_texts(tmp_path))
    manifest = (artifact / "manifest.json").read_bytes()
    with pytest.raises(FileNotFoundError):  # a failed calibration leaves the manifest as it was
        calibrate_artifact(artifact, str(tmp_path / "missing"), ["neg", "pos"], "2-3", threads=1)
    assert (artifact / "manifest.json").read_bytes() == manifest
    rule = calibrate_artifact(artifact, str(tmp_path / "docs"), ["neg", "pos"], "2-3", threads=1)
    accuracy = rule["selection"]["accuracy"]
    assert accuracy["calibrated"] >= accuracy["mean"] and rule["selection"]["folds"] == "2-3"
    section = json.loads((artifact / "manifest.json").read_text())["preprocessing"]
    assert section["document_calibration"] == rule and section["pooling"] == "mean"

    calibration = calibration_from_section(rule)
    grouped, _ = document_window_log_probs(run, "4-5")
    expected = [[math.exp(v) for v in pool_log_probabilities(rows, "mean", calibration)] for rows in grouped]
    served = serve(artifact, heldout_texts(tmp_path))
    for rows, want, got, old in zip(grouped, expected, served, before, strict=True):
        assert [got.probabilities["negative"], got.probabilities["positive"]] == pytest.approx(want, abs=1e-5)
        if len(rows) == 1:  # a text of one window is answered as before calibration
            assert got.probabilities == pytest.approx(old.probabilities, abs=1e-6)
