"""Tune a published classifier's document calibration on selection folds, and record it in its manifest.

A classifier trained on sentences and served on reviews read window by window (docs/sentiment.md)
pools window log-odds whose prior is shifted and whose verdict sits in the last windows. The rule
(service/engine/preprocessing.py, DocumentCalibration) has three numbers, chosen here on documents
that the classifier never trained on and that the report figure never uses (cv700-cv799):
- `position_weight` and `log_odds_bias`: the pair with the best selection accuracy (a grid; among
  the biases that tie, the middle of the widest tied run, so the boundary does not sit on an edge);
- `log_odds_scale`: maximum likelihood with the boundary held, so served probabilities are calibrated.

The windows come from the service's input policy and the batcher's tokenizer call; their
probabilities come from the same graph on the CPU, and the pooling is the function the service pools
with (tests/training/test_classifier_contract.py checks served answers against it). The manifest is
written once, after everything is computed, and atomically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from scipy.optimize import minimize_scalar
from tokenizers import Tokenizer

from service.engine.preprocessing import (
    DocumentCalibration,
    log_probabilities,
    policy_from_manifest,
    pool_log_probs,
)
from training.data import parse_folds, read_labelled_folders
from training.export.manifest import MANIFEST_FILE, write_preprocessing_section

POSITION_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
BIASES = np.round(np.linspace(-3.0, 3.0, 241), 4)


def served_window_log_probs(
    artifact: Path, preprocessing: dict[str, Any], texts: Sequence[str], threads: int = 2
) -> list[np.ndarray]:
    """Each text's window log-probabilities [windows, classes] under `preprocessing` (the artifact's
    served policy, or the one about to be written): the batcher's own tokenizer call and windows."""
    manifest = json.loads((artifact / MANIFEST_FILE).read_text())
    policy = policy_from_manifest(
        {**manifest, "preprocessing": preprocessing}, manifest.get("context_length")
    )
    tokenizer = manifest["tokenizer"]
    eos_id = tokenizer.get("eos_id") if tokenizer.get("append_eos") else None
    encoder = Tokenizer.from_file(str(artifact / tokenizer["file"]))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(artifact / "model.onnx"), options, providers=["CPUExecutionProvider"])
    grouped = []
    for text in texts:
        windows = policy.inputs(encoder.encode(text, add_special_tokens=False).ids, eos_id)
        width = max(len(window) for window in windows)
        ids = np.full((len(windows), width), int(tokenizer.get("pad_id", 0)), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, window in enumerate(windows):
            ids[row, : len(window)], mask[row, : len(window)] = window, 1
        (probabilities,) = session.run(["probabilities"], {"input_ids": ids, "attention_mask": mask})
        grouped.append(log_probabilities(probabilities))
    return grouped


def _log_odds(grouped: Sequence[np.ndarray], calibration: DocumentCalibration) -> np.ndarray:
    pooled = [pool_log_probs(rows, "mean", calibration) for rows in grouped]
    return np.array([row[1] - row[0] for row in pooled])


def _middle_of_best(accuracies: np.ndarray) -> tuple[float, int]:
    """(best accuracy, index at the middle of the widest run of biases that reach it)."""
    best = accuracies.max()
    runs, start = [], None
    for index, hit in enumerate([*(accuracies == best), False]):
        if hit and start is None:
            start = index
        elif not hit and start is not None:
            runs.append((index - start, start))
            start = None
    width, first = max(runs)
    return float(best), first + (width - 1) // 2


def fit_calibration(grouped: Sequence[np.ndarray], labels: Sequence[int]) -> dict[str, Any]:
    """The rule with the best selection accuracy, its likelihood-fitted scale, and what each step gave.

    A document of one window is served without the rule, so the bias and the scale act only on the
    documents of several windows; the accuracies count every document as it will be served."""
    y = np.asarray(labels)
    several = np.array([len(rows) > 1 for rows in grouped])
    if not several.any():
        raise ValueError("no selection document spans several windows: there is nothing to calibrate")
    odds = {
        weight: _log_odds(grouped, DocumentCalibration(position_weight=weight)) for weight in POSITION_WEIGHTS
    }
    candidates = []
    for weight, weighted in odds.items():
        accuracies = np.array([((weighted + bias * several > 0) == y).mean() for bias in BIASES])
        accuracy, at = _middle_of_best(accuracies)
        candidates.append((accuracy, -weight, weight, float(BIASES[at])))  # ties: the smaller weight
    accuracy, _, weight, bias = max(candidates)
    shifted = (odds[weight] + bias)[several]
    signs = np.where(y[several] == 1, 1.0, -1.0)
    scale = minimize_scalar(
        lambda s: float(np.logaddexp(0.0, -s * signs * shifted).mean()), bounds=(0.05, 20.0), method="bounded"
    ).x
    plain = odds[0.0]  # weight 0, no shift, scale 1: the plain mean
    return {
        "position_weight": weight,
        "log_odds_bias": bias,
        "log_odds_scale": round(float(scale), 4),
        "selection_accuracy": {"mean": float(((plain > 0) == y).mean()), "calibrated": accuracy},
    }


def calibrate_artifact(
    artifact: Path, folder: str, classes: Sequence[str], folds: str, threads: int = 2, windows: bool = False
) -> dict[str, Any]:
    """Fit the rule on `folds` of a folder corpus and write it into the artifact's manifest; with
    `windows`, a truncating policy first becomes non-overlapping windows pooled by their mean.
    Everything is computed before the manifest is written, once: a failure leaves it as it was."""
    artifact = Path(artifact)
    manifest = json.loads((artifact / MANIFEST_FILE).read_text())
    preprocessing = dict(manifest.get("preprocessing") or {})
    preprocessing.pop("document_calibration", None)
    if windows and preprocessing.get("long_documents") != "windows":
        room = int(preprocessing["max_tokens"]) - (1 if manifest["tokenizer"].get("append_eos") else 0)
        preprocessing.update(long_documents="windows", window_stride=room, pooling="mean")
    if (preprocessing.get("long_documents"), preprocessing.get("pooling")) != ("windows", "mean"):
        raise ValueError(f"{artifact}: calibration needs windows pooled by their mean (or --windows)")
    if len(manifest.get("labels") or []) != 2:
        raise ValueError(f"{artifact}: calibration needs a two-class classifier")
    examples = read_labelled_folders(folder, classes, parse_folds(folds))
    grouped = served_window_log_probs(
        artifact, preprocessing, [example.text for example in examples], threads
    )
    fitted = fit_calibration(grouped, [example.label for example in examples])
    rule = {key: fitted[key] for key in ("position_weight", "log_odds_bias", "log_odds_scale")}
    rule["selection"] = {
        "folds": folds,
        "documents": len(examples),
        "accuracy": fitted["selection_accuracy"],
        "how": f"python -m training calibrate exported_models/{artifact.name} --folds {folds}"
        + (" --windows" if windows else ""),
    }
    write_preprocessing_section(artifact, {**preprocessing, "document_calibration": rule})
    return rule
