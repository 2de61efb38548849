"""The classifier batcher: max batch size, max queue delay, length bucketing, a bounded queue."""

import asyncio
import time

import pytest

from service.engine import BatchRecord, ClassifierBatcher, QueueFullError
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


def test_a_lone_request_waits_about_max_delay_for_company(classifier_path, bpe_tokenizer):
    records: list[BatchRecord] = []
    batcher = make_batcher(classifier_path, bpe_tokenizer, records, max_batch=32, max_delay_ms=40)

    async def go():
        batcher.start()
        try:
            for _ in range(3):
                await batcher.classify(["alone"])
        finally:
            await batcher.stop()

    run(go())
    assert [r.size for r in records] == [1, 1, 1]
    for record in records:
        assert 0.040 <= record.oldest_wait_s < 0.040 + 0.5  # generous above: the CPU is shared


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


def test_a_full_queue_rejects_at_once(classifier_path, bpe_tokenizer):
    batcher = make_batcher(classifier_path, bpe_tokenizer, [], max_batch=4, max_delay_ms=5, max_queue=5)

    async def go():
        batcher.start()
        try:
            with pytest.raises(QueueFullError):
                await batcher.classify(["t"] * 6)
            assert len(await batcher.classify(["t"] * 5)) == 5
        finally:
            await batcher.stop()

    run(go())
