"""The document calibration rule: position weights and a shifted, scaled log-odds for texts of several
windows, the same in the service and in training, refused where it cannot apply, and fitted on
selection documents so that it corrects a known shift."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.engine.errors import ManifestError
from service.engine.preprocessing import DocumentCalibration, InputPolicy, policy_from_manifest
from training.calibrate import fit_calibration
from training.long_documents import pool_log_probabilities


def two_class_rows(log_odds: list[float]) -> list[list[float]]:
    """Log-probabilities [negative, positive] with the given log-odds."""
    return [[-math.log1p(math.exp(z)), -math.log1p(math.exp(-z))] for z in log_odds]


def test_later_windows_weigh_more_and_the_pooled_log_odds_are_shifted_and_scaled() -> None:
    rule = DocumentCalibration(position_weight=2.0, log_odds_bias=0.5, log_odds_scale=3.0)
    log_odds = [-1.0, 0.2, 1.5]
    pooled = pool_log_probabilities(two_class_rows(log_odds), "mean", rule)
    weights = [1.0, 2.0, 3.0]  # 1 + 2 * i / (n - 1)
    mean = sum(w * z for w, z in zip(weights, log_odds, strict=True)) / sum(weights)
    assert pooled[1] - pooled[0] == pytest.approx(3.0 * (mean + 0.5))
    assert math.exp(pooled[0]) + math.exp(pooled[1]) == pytest.approx(1.0)
    policy = InputPolicy(8, long_documents="windows", window_stride=8, calibration=rule)
    served = policy.pool(np.exp(np.array(two_class_rows(log_odds))))
    assert served == pytest.approx(np.exp(pooled), abs=1e-6)


def test_a_text_of_one_window_is_answered_as_without_calibration() -> None:
    rule = DocumentCalibration(position_weight=4.0, log_odds_bias=2.0, log_odds_scale=5.0)
    (row,) = two_class_rows([0.7])
    assert pool_log_probabilities([row], "mean", rule) == pytest.approx(row)
    policy = InputPolicy(8, long_documents="windows", window_stride=8, calibration=rule)
    assert policy.pool(np.exp(np.array([row]))) == pytest.approx(np.exp(row))


def test_calibration_is_refused_where_it_cannot_apply() -> None:
    rule = DocumentCalibration(log_odds_bias=1.0)
    with pytest.raises(ValueError, match="mean"):
        InputPolicy(8, long_documents="windows", window_stride=8, pooling="max", calibration=rule)
    with pytest.raises(ValueError, match="windows"):
        InputPolicy(8, calibration=rule)
    with pytest.raises(ValueError, match="log_odds_scale"):
        DocumentCalibration(log_odds_scale=0.0)
    section = {"max_tokens": 8, "long_documents": "windows", "window_stride": 8, "pooling": "mean"}
    calibrated = {**section, "document_calibration": {"log_odds_bias": 1.0}}
    with pytest.raises(ManifestError, match="two labels"):
        policy_from_manifest({"name": "m", "labels": ["a", "b", "c"], "preprocessing": calibrated}, 8)
    with pytest.raises(ManifestError, match="finite"):
        bad = {**section, "document_calibration": {"log_odds_bias": float("nan")}}
        policy_from_manifest({"name": "m", "labels": ["a", "b"], "preprocessing": bad}, 8)
    for bad in ([1.0], {"log_odds_scal": 2.0}, {"log_odds_scale": True}, {"position_weight": 1e308}):
        with pytest.raises(ManifestError, match="malformed preprocessing"):
            broken = {**section, "document_calibration": bad}
            policy_from_manifest({"name": "m", "labels": ["a", "b"], "preprocessing": broken}, 8)
    policy = policy_from_manifest({"name": "m", "labels": ["a", "b"], "preprocessing": calibrated}, 8)
    assert policy.calibration == DocumentCalibration(log_odds_bias=1.0)


def test_the_fit_corrects_a_shifted_prior_and_finds_the_informative_last_windows() -> None:
    """Documents whose early windows are noise and whose last window carries the label, all read
    one log-odd too negative: the fitted rule weighs the end, shifts back, and gains accuracy."""
    rng = np.random.default_rng(0)
    labels = [int(bit) for bit in rng.integers(0, 2, size=400)]
    grouped = []
    for label in labels:
        noise = rng.normal(0.0, 1.0, size=6).tolist()
        verdict = (1.5 if label else -1.5) + rng.normal(0.0, 0.7)
        grouped.append(np.array(two_class_rows([z - 1.0 for z in [*noise, verdict]])))
    grouped[:40] = [rows[-1:] for rows in grouped[:40]]  # one-window documents: served without the rule
    fitted = fit_calibration(grouped, labels)
    rule = DocumentCalibration(fitted["position_weight"], fitted["log_odds_bias"], fitted["log_odds_scale"])
    served = [pool_log_probabilities(rows, "mean", rule) for rows in grouped]
    served_accuracy = np.mean([(row[1] > row[0]) == label for row, label in zip(served, labels, strict=True)])
    assert fitted["selection_accuracy"]["calibrated"] == pytest.approx(served_accuracy)
    assert fitted["position_weight"] > 0
    assert 0.3 < fitted["log_odds_bias"] < 1.7
    assert fitted["selection_accuracy"]["calibrated"] > fitted["selection_accuracy"]["mean"] + 0.1
    assert fitted["log_odds_scale"] > 0
