"""The classifier batcher: max batch size, max queue delay, length bucketing, a bounded queue."""

import asyncio
import threading
import time

import numpy as np
import pytest

from service.engine import (
    BatchRecord,
    ClassifierBatcher,
    InvalidRequestError,
    QueueFullError,
    RequestTooLargeError,
)
from service.engine.errors import ManifestError
from service.engine.preprocessing import InputPolicy
from service.engine.runtime import ModelSession
from tests.engine.tiny_classifier import build_classifier, expected_probabilities


@pytest.fixture(scope="module")
def classifier_path(tmp_path_factory, bpe_tokenizer):
    path = tmp_path_factory.mktemp("clf") / "model.onnx"
    table = build_classifier(path, bpe_tokenizer.get_vocab_size())
    return path, table


def make_batcher(classifier_path, tokenizer, records: list[BatchRecord], **kw) -> ClassifierBatcher:
    path, _ = classifier_path
    return ClassifierBatcher(
        name="tiny-clf",
        session=ModelSession(path, "cpu", 1),
        tokenizer=tokenizer,
        labels=["negative", "positive"],
        pad_id=0,
        eos_id=2,
        append_eos=True,
        max_length=64,
        on_batch=records.append,
        **kw,
    )


def run(coro):
    return asyncio.run(coro)


def test_results_match_the_model_and_padding_does_not_change_them(classifier_path, bpe_tokenizer):
    records: list[BatchRecord] = []
    batcher = make_batcher(classifier_path, bpe_tokenizer, records, max_batch=8, max_delay_ms=20)
    texts = ["a fine film", "to be, or not to be, that is the question", "x"]

    async def go():
        batcher.start()
        try:
            return await batcher.classify(texts)
        finally:
            await batcher.stop()

    results = run(go())
    _, table = classifier_path
    for text, result in zip(texts, results, strict=True):
        ids = [*bpe_tokenizer.encode(text).ids, 2]
        probs = expected_probabilities(table, ids)
        got = [result.probabilities["negative"], result.probabilities["positive"]]
        assert got == pytest.approx(probs, 1e-5)
        assert result.label == ("positive" if probs[1] > probs[0] else "negative")
    assert [r.size for r in records] == [3]


def test_batches_never_exceed_max_batch_and_full_batches_do_not_wait(classifier_path, bpe_tokenizer):
    records: list[BatchRecord] = []
    batcher = make_batcher(classifier_path, bpe_tokenizer, records, max_batch=4, max_delay_ms=500)

    async def go():
        batcher.start()
        try:
            return await batcher.classify([f"text number {i}" for i in range(10)])
        finally:
            await batcher.stop()

    started = time.perf_counter()
    results = run(go())
    assert len(results) == 10
    assert [r.size for r in records] == [4, 4, 2]
    # Full batches start at once; only the last, partial batch waits for the 500 ms delay.
    assert records[0].oldest_wait_s < 0.4 and records[1].oldest_wait_s < 0.4
    assert records[2].oldest_wait_s >= 0.5
    assert time.perf_counter() - started < 5.0


def test_a_lone_request_to_an_idle_batcher_is_dispatched_at_once(classifier_path, bpe_tokenizer):
    records: list[BatchRecord] = []
    batcher = make_batcher(classifier_path, bpe_tokenizer, records, max_batch=32, max_delay_ms=2000)

    async def go():
        batcher.start()
        try:
            for _ in range(3):
                await batcher.classify(["alone"])
        finally:
            await batcher.stop()

    started = time.perf_counter()
    run(go())
    assert [r.size for r in records] == [1, 1, 1]
    assert all(record.oldest_wait_s < 1.0 for record in records), records  # far below the 2 s max_delay
    assert time.perf_counter() - started < 3.0


def test_requests_arriving_while_a_batch_runs_wait_for_company(classifier_path, bpe_tokenizer):
    """Under load (a batch running), newcomers are held up to max_delay and leave together."""
    records: list[BatchRecord] = []
    batcher = make_batcher(classifier_path, bpe_tokenizer, records, max_batch=32, max_delay_ms=150)
    running, release = threading.Event(), threading.Event()
    model_run = batcher._run

    def held_run(ids, mask):  # the real model, held on its first served batch while others arrive
        if batcher.ready and not release.is_set():
            running.set()
            release.wait(10)
        return model_run(ids, mask)

    batcher._run = held_run

    async def go():
        batcher.start()
        try:
            first = asyncio.create_task(batcher.classify(["first"]))
            assert await asyncio.to_thread(running.wait, 10)
            later = [asyncio.create_task(batcher.classify([f"later {i}"])) for i in range(2)]
            while len(batcher._pending) < 2:
                await asyncio.sleep(0.001)
            release.set()
            await asyncio.gather(first, *later)
        finally:
            release.set()
            await batcher.stop()

    run(go())
    assert [r.size for r in records] == [1, 2]
    assert records[1].oldest_wait_s >= 0.150  # held for company, not dispatched at once


def test_texts_of_similar_length_are_batched_together(classifier_path, bpe_tokenizer):
    records: list[BatchRecord] = []
    batcher = make_batcher(classifier_path, bpe_tokenizer, records, max_batch=4, max_delay_ms=200)
    short, long = "ab", "to be, or not to be, that is the question, " * 2
    texts = [short, long, short, long, short, long, short, long]

    async def go():
        batcher.start()
        try:
            await batcher.classify(texts)
        finally:
            await batcher.stop()

    run(go())
    short_len = len(bpe_tokenizer.encode(short).ids) + 1
    assert [r.size for r in records] == [4, 4]
    assert records[0].padded_length == short_len  # the short texts went together, unpadded


def test_a_request_larger_than_the_queue_is_too_large_not_retryable(classifier_path, bpe_tokenizer):
    """More model inputs than the queue holds could never be admitted, so it is a 413 naming `texts`,
    not a queue-full 503 that invites a retry."""
    batcher = make_batcher(classifier_path, bpe_tokenizer, [], max_batch=4, max_delay_ms=5, max_queue=5)

    async def go():
        batcher.start()
        try:
            with pytest.raises(RequestTooLargeError) as caught:
                await batcher.classify(["t"] * 6)
            assert caught.value.field == "texts" and not isinstance(caught.value, QueueFullError)
            assert len(await batcher.classify(["t"] * 5)) == 5
        finally:
            await batcher.stop()

    run(go())


def test_a_policy_that_leaves_no_room_for_text_is_refused_at_load(classifier_path, bpe_tokenizer):
    with pytest.raises(ManifestError, match="no room"):
        make_batcher(classifier_path, bpe_tokenizer, [], policy=InputPolicy(max_tokens=1))


def windowed_batcher(classifier_path, tokenizer, records, **kw) -> ClassifierBatcher:
    policy = InputPolicy(max_tokens=8, long_documents="windows", window_stride=7)
    return make_batcher(classifier_path, tokenizer, records, policy=policy, **kw)


def test_a_long_texts_windows_ride_in_one_batch_with_other_texts_and_are_pooled(
    classifier_path, bpe_tokenizer
):
    records: list[BatchRecord] = []
    batcher = windowed_batcher(classifier_path, bpe_tokenizer, records, max_batch=32, max_delay_ms=20)
    long = "to be, or not to be, that is the question: whether tis nobler in the mind to suffer"

    async def go():
        batcher.start()
        try:
            return await batcher.classify(["a fine film", long])
        finally:
            await batcher.stop()

    results = run(go())
    _, table = classifier_path
    windows = [batcher.policy.inputs(bpe_tokenizer.encode(text).ids, 2) for text in ("a fine film", long)]
    assert len(windows[1]) >= 3 and [r.size for r in records] == [len(windows[0]) + len(windows[1])]
    for result, pieces in zip(results, windows, strict=True):
        logs = np.log([expected_probabilities(table, piece) for piece in pieces])
        pooled = np.exp(logs.mean(axis=0))
        want = pooled / pooled.sum()
        assert [result.probabilities["negative"], result.probabilities["positive"]] == pytest.approx(
            want, 1e-5
        )


def test_limits_on_windows_per_text_and_tokens_per_request_name_the_field(classifier_path, bpe_tokenizer):
    batcher = windowed_batcher(
        classifier_path, bpe_tokenizer, [], max_windows_per_text=3, max_tokens_per_request=40
    )

    def windows(text: str) -> int:
        return len(batcher.policy.inputs(bpe_tokenizer.encode(text).ids, 2))

    by_windows = {windows("word " * n): "word " * n for n in range(60, 0, -1)}
    three_windows, four_windows = by_windows[3], by_windows[4]  # the shortest of each count

    async def go():
        batcher.start()
        try:
            assert len(batcher.encode(three_windows)) == 3
            with pytest.raises(RequestTooLargeError) as caught:
                await batcher.classify(["fine", four_windows])
            assert caught.value.field == "texts[1]"
            with pytest.raises(RequestTooLargeError) as caught:
                await batcher.classify([three_windows, three_windows])  # 2 x 3 x 8 = 48 model ids > 40
            assert caught.value.field == "texts"
            with pytest.raises(InvalidRequestError) as caught:
                await batcher.classify(["fine", " .,;!? "])
            assert caught.value.field == "texts[1]" and not isinstance(caught.value, RequestTooLargeError)
            assert len(await batcher.classify([three_windows])) == 1  # at the limits: served
        finally:
            await batcher.stop()

    run(go())
