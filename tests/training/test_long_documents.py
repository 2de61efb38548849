"""Windows and pooling of long texts: the boundaries, the pooling rule, and training == serving."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.engine.preprocessing import InputPolicy, policy_from_manifest
from training.long_documents import pool_log_probabilities, split_windows, truncate, window_starts

EOS = 2


def test_a_text_exactly_one_window_long_is_one_window() -> None:
    assert split_windows(list(range(8)), room=8, stride=8) == [list(range(8))]
    assert InputPolicy(9, long_documents="windows", window_stride=8).inputs(range(8), EOS) == [
        [*range(8), EOS]
    ]


def test_one_token_longer_makes_a_second_window_that_ends_on_the_last_token() -> None:
    assert split_windows(list(range(9)), room=8, stride=8) == [list(range(8)), list(range(1, 9))]
    policy = InputPolicy(9, long_documents="windows", window_stride=8)
    assert policy.inputs(range(9), EOS) == [[*range(8), EOS], [*range(1, 9), EOS]]


def test_an_empty_text_is_one_empty_window() -> None:
    """The service refuses empty texts before this (a 400); the split itself stays well defined."""
    assert split_windows([], room=8, stride=8) == [[]]
    assert InputPolicy(9, long_documents="windows", window_stride=8).inputs([], EOS) == [[EOS]]


def test_overlapping_windows_cover_every_token_and_start_stride_apart() -> None:
    assert window_starts(20, room=8, stride=5) == [0, 5, 10, 12]
    windows = split_windows(list(range(20)), room=8, stride=5)
    assert sorted({token for window in windows for token in window}) == list(range(20))
    assert all(len(window) == 8 for window in windows)


@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 15, 16, 17, 40, 101])
@pytest.mark.parametrize(("room", "stride"), [(8, 8), (8, 3), (5, 7)])
def test_the_service_cuts_exactly_as_training_does(length: int, room: int, stride: int) -> None:
    ids = list(range(100, 100 + length))
    served = InputPolicy(room + 1, long_documents="windows", window_stride=stride).inputs(ids, EOS)
    assert served == [[*window, EOS] for window in split_windows(ids, room, stride)]
    for cut in ("head", "tail", "head_tail"):
        served = InputPolicy(room, truncation=cut).inputs(ids, None)
        assert served == [truncate(ids, room, cut)]


def test_mean_pooling_averages_the_window_log_odds() -> None:
    windows = [[math.log(0.9), math.log(0.1)], [math.log(0.2), math.log(0.8)], [math.log(0.6), math.log(0.4)]]
    pooled = pool_log_probabilities(windows, "mean")
    log_odds = [row[1] - row[0] for row in windows]
    assert pooled[1] - pooled[0] == pytest.approx(sum(log_odds) / 3)
    assert math.exp(pooled[0]) + math.exp(pooled[1]) == pytest.approx(1.0)
    served = InputPolicy(8, long_documents="windows", window_stride=8).pool(np.exp(np.array(windows)))
    assert served == pytest.approx(np.exp(pooled), abs=1e-6)


def test_max_pooling_takes_the_most_confident_window() -> None:
    windows = [
        [math.log(0.6), math.log(0.4)],
        [math.log(0.05), math.log(0.95)],
        [math.log(0.7), math.log(0.3)],
    ]
    assert pool_log_probabilities(windows, "max") == pytest.approx(windows[1])
    served = InputPolicy(8, long_documents="windows", window_stride=8, pooling="max")
    assert served.pool(np.exp(np.array(windows))) == pytest.approx([0.05, 0.95], abs=1e-6)


def test_a_manifest_without_preprocessing_keeps_the_head_up_to_the_context() -> None:
    assert policy_from_manifest({"name": "old"}, 128) == InputPolicy(max_tokens=128)
    assert policy_from_manifest({"name": "old-rnn"}, None) == InputPolicy(max_tokens=512)
    section = {"max_tokens": 64, "truncation": "head_tail", "long_documents": "windows", "window_stride": 63}
    policy = policy_from_manifest({"name": "new", "preprocessing": {**section, "pooling": "max"}}, 128)
    assert (policy.max_tokens, policy.window_stride, policy.pooling) == (64, 63, "max")
