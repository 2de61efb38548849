"""The persistent decode batch: its arrays change when a sample joins or leaves, rows stay packed and
in order, and the sampler's fast path (every row plain greedy) is taken only when it applies."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.engine import GenerationRequest, SamplingParams
from service.engine.decode_batch import DecodeBatch
from service.engine.request import RequestHandle
from service.engine.sequence import Job, Sequence, request_rngs
from tests.engine.conftest import train_bpe

VOCAB = 300


@pytest.fixture(scope="module")
def make_seq():
    tokenizer = train_bpe(VOCAB)
    loop = asyncio.new_event_loop()

    def make(slot: int, **params: object) -> Sequence:
        request = GenerationRequest(prompt_token_ids=(5, 6, 7), params=SamplingParams(**params))
        handle = RequestHandle(request, [5, 6, 7], loop, lambda: None)
        job = Job(handle, np.array([5, 6, 7], dtype=np.int64), frozenset())
        return Sequence(job, 0, slot, tokenizer, VOCAB, request_rngs(1, 1)[0])

    yield make
    loop.close()


def test_rows_join_and_leave_with_their_parameters(make_seq):
    batch = DecodeBatch(max_slots=4)
    greedy, warm, picky = make_seq(0), make_seq(1, temperature=0.5), make_seq(3, temperature=2.0, top_k=5)
    for seq, token in ((greedy, 10), (warm, 11), (picky, 12)):
        batch.add(seq, token)
    assert len(batch) == 3 and batch.seqs == [greedy, warm, picky]
    assert batch.slots[:3].tolist() == [0, 1, 3] and batch.tokens[:3].tolist() == [10, 11, 12]
    assert batch.arrays.temperature[:3].tolist() == [1.0, 0.5, 2.0]
    assert batch.arrays.top_k[:3].tolist() == [0, 0, 5]
    assert not batch.all_plain_greedy

    batch.remove(warm)  # the rows after it move up, in order
    assert batch.seqs == [greedy, picky] and [s.batch_index for s in batch.seqs] == [0, 1]
    assert warm.batch_index is None
    assert batch.slots[:2].tolist() == [0, 3] and batch.tokens[:2].tolist() == [10, 12]
    assert batch.arrays.temperature[:2].tolist() == [1.0, 2.0] and batch.arrays.top_k[:2].tolist() == [0, 5]

    batch.move(picky, 1)  # compaction moved its state
    assert batch.slots[:2].tolist() == [0, 1]
    batch.remove(picky)
    assert batch.all_plain_greedy and batch.seqs == [greedy]


def test_all_greedy_rows_take_the_argmax_into_the_next_inputs(make_seq):
    batch = DecodeBatch(max_slots=4)
    seqs = [make_seq(i) for i in range(3)]
    for seq in seqs:
        batch.add(seq, 1)
    logits = np.random.default_rng(0).normal(size=(3, VOCAB)).astype(np.float32)
    out = batch.sample(logits, None)
    assert out.tokens.tolist() == logits.argmax(axis=1).tolist()
    assert batch.tokens[:3].tolist() == out.tokens.tolist()
    assert out.logprobs == [None] * 3


def test_a_mixed_batch_samples_each_row_by_its_own_parameters(make_seq):
    batch = DecodeBatch(max_slots=4)
    greedy, logprobs = make_seq(0), make_seq(1, logprobs=2)
    batch.add(greedy, 1)
    batch.add(logprobs, 1)
    logits = np.random.default_rng(1).normal(size=(2, VOCAB)).astype(np.float32)
    out = batch.sample(logits, None)
    assert out.tokens.tolist() == logits.argmax(axis=1).tolist()  # both greedy
    assert out.logprobs[0] is None and out.logprobs[1] is not None and len(out.top_logprobs[1]) == 2
    assert batch.tokens[:2].tolist() == out.tokens.tolist()
