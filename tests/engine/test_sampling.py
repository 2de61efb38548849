"""Each sampling parameter does what it says, vectorised over rows with their own parameters."""

import numpy as np
import pytest

from service.engine.params import SamplingParams
from service.engine.sampling import (
    SamplingRow,
    inverse_cdf,
    log_softmax,
    plain_greedy,
    plain_temperature,
    process_logits,
    prompt_logprobs,
    sample,
)
from service.engine.sequence import request_rngs

VOCAB = 12


def row(params: SamplingParams, seed: int = 0, generated=(), prompt=(), vocab: int = VOCAB) -> SamplingRow:
    """A row flagged for its fast paths exactly as the engine's Sequence flags it."""
    counts = np.zeros(vocab, dtype=np.int32)
    seen = np.zeros(vocab, dtype=bool)
    for t in generated:
        counts[t] += 1
    seen[list(prompt) + list(generated)] = True
    return SamplingRow(
        params,
        request_rngs(seed, 1)[0],
        counts,
        seen,
        len(generated),
        (2,),
        plain_greedy=plain_greedy(params),
        plain_temperature=plain_temperature(params),
    )


def logits_row() -> np.ndarray:
    return np.linspace(2.0, -2.0, VOCAB).astype(np.float32)  # token 0 is the best, 11 the worst


def draw(params: SamplingParams, n: int, seed: int = 0) -> np.ndarray:
    """n independent draws in one batch: n rows with the same parameters, each with its own RNG."""
    rows = [row(params) for _ in range(n)]
    for r, rng in zip(rows, request_rngs(seed, n), strict=True):
        r.rng = rng
    return sample(np.tile(logits_row(), (n, 1)), rows).tokens


def test_greedy_takes_the_argmax_whatever_the_seed():
    x = np.random.default_rng(1).normal(size=(3, VOCAB)).astype(np.float32)
    rows = [row(SamplingParams(), seed=s) for s in range(3)]
    assert sample(x, rows).tokens.tolist() == x.argmax(axis=1).tolist()


def test_temperature_one_matches_softmax_frequencies():
    tokens = draw(SamplingParams(temperature=1.0), 4000)
    expected = np.exp(log_softmax(logits_row()))
    observed = np.bincount(tokens, minlength=VOCAB) / len(tokens)
    assert np.abs(observed - expected).max() < 0.03


def test_temperature_scales_the_logits_before_the_softmax():
    for temperature in (0.2, 2.0):
        tokens = draw(SamplingParams(temperature=temperature), 3000)
        expected = np.exp(log_softmax(logits_row() / temperature))
        observed = np.bincount(tokens, minlength=VOCAB) / len(tokens)
        assert np.abs(observed - expected).max() < 0.03
    cold = np.mean(draw(SamplingParams(temperature=0.2), 500) == 0)
    hot = np.mean(draw(SamplingParams(temperature=2.0), 500) == 0)
    assert cold > 2 * hot


def test_top_k_keeps_exactly_the_k_best_tokens():
    processed = process_logits(logits_row()[None, :], [row(SamplingParams(temperature=1.0, top_k=3))])
    assert np.flatnonzero(np.isfinite(processed[0])).tolist() == [0, 1, 2]
    assert set(draw(SamplingParams(temperature=5.0, top_k=3), 300)) == {0, 1, 2}


def test_top_p_keeps_the_smallest_prefix_reaching_the_mass():
    probs = np.exp(log_softmax(logits_row()))
    top_p = 0.7
    need = int(np.searchsorted(np.cumsum(probs), top_p) + 1)  # tokens needed to reach 0.7
    processed = process_logits(logits_row()[None, :], [row(SamplingParams(temperature=1.0, top_p=top_p))])
    kept = np.flatnonzero(np.isfinite(processed[0]))
    assert kept.tolist() == list(range(need))
    assert probs[kept].sum() >= top_p > probs[kept[:-1]].sum()


def test_top_p_tiny_still_keeps_the_best_token():
    assert set(draw(SamplingParams(temperature=1.0, top_p=1e-6), 50)) == {0}


def test_min_p_removes_tokens_below_the_fraction_of_the_best():
    probs = np.exp(log_softmax(logits_row()))
    processed = process_logits(logits_row()[None, :], [row(SamplingParams(temperature=1.0, min_p=0.3))])
    kept = np.isfinite(processed[0])
    assert (kept == (probs >= 0.3 * probs.max())).all()


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits():
    x = logits_row()
    penalised = row(SamplingParams(repetition_penalty=2.0), prompt=[0], generated=[11])
    processed = process_logits(x[None, :], [penalised])
    assert processed[0, 0] == pytest.approx(x[0] / 2.0)
    assert processed[0, 11] == pytest.approx(x[11] * 2.0)
    assert processed[0, 5] == pytest.approx(x[5])


def test_presence_and_frequency_penalties_follow_openai_over_generated_tokens():
    x = logits_row()
    params = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25)
    processed = process_logits(x[None, :], [row(params, generated=[3, 3, 3, 4], prompt=[5])])
    assert processed[0, 3] == pytest.approx(x[3] - 0.5 - 3 * 0.25)
    assert processed[0, 4] == pytest.approx(x[4] - 0.5 - 1 * 0.25)
    assert processed[0, 5] == pytest.approx(x[5])  # prompt tokens are not penalised


def test_min_new_tokens_suppresses_stop_tokens():
    x = np.zeros(VOCAB, dtype=np.float32)
    x[2] = 10.0  # the stop token (suppress_ids in row())
    r = row(SamplingParams(min_new_tokens=2, max_new_tokens=4))
    assert sample(x[None, :], [r]).tokens[0] != 2


def test_each_row_uses_its_own_parameters_in_one_batch():
    x = np.stack([logits_row()] * 3)
    rows = [
        row(SamplingParams()),
        row(SamplingParams(temperature=1.0, top_k=1)),
        row(SamplingParams(repetition_penalty=100.0), prompt=[0]),
    ]
    assert sample(x, rows).tokens.tolist() == [0, 0, 1]


def test_logprobs_are_the_log_softmax_of_the_processed_distribution():
    params = SamplingParams(temperature=0.5, top_k=4, logprobs=3)
    r = row(params)
    x = logits_row()[None, :]
    out = sample(x, [r])
    expected = log_softmax(process_logits(x, [row(params)]))[0]
    token = int(out.tokens[0])
    assert out.logprobs[0] == pytest.approx(expected[token])
    assert [t for t, _ in out.top_logprobs[0]] == [0, 1, 2]
    assert [lp for _, lp in out.top_logprobs[0]] == pytest.approx(expected[:3].tolist())


def test_same_seed_gives_the_same_draws_whatever_else_is_in_the_batch():
    params = SamplingParams(temperature=1.0, seed=7)
    x = np.random.default_rng(3).normal(size=(6, VOCAB)).astype(np.float32)
    alone_row = row(params, seed=7)
    alone = [int(sample(x[:1], [alone_row]).tokens[0]) for _ in range(30)]
    crowd = [row(params, seed=7)] + [row(SamplingParams(temperature=1.0), seed=100 + i) for i in range(5)]
    batched = [int(sample(x, crowd).tokens[0]) for _ in range(30)]
    assert alone == batched


def test_n_samples_of_one_seed_get_different_streams():
    a, b = request_rngs(11, 2)
    assert a.random() != b.random()
    assert request_rngs(11, 2)[1].random() == request_rngs(11, 2)[1].random()


def test_prompt_logprobs_score_each_token_given_its_prefix_across_chunks():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, VOCAB))
    prompt = np.array([1, 4, 2, 7, 3, 9])
    full = prompt_logprobs(logits, prompt, None)
    first = prompt_logprobs(logits[:4], prompt[:4], None)
    second = prompt_logprobs(logits[4:], prompt[4:], logits[3])
    expected = [log_softmax(logits[i])[prompt[i + 1]] for i in range(5)]
    assert full == pytest.approx(expected)
    assert first + second == pytest.approx(expected)


def test_logit_bias_is_added_before_temperature_and_only_to_its_row():
    biased = SamplingParams(temperature=2.0, logit_bias={"5": 3.0, "0": -1.5})
    x = np.tile(logits_row(), (2, 1))
    processed = process_logits(x, [row(biased), row(SamplingParams(temperature=2.0))])
    expected = logits_row().astype(np.float64)
    expected[5] += 3.0
    expected[0] -= 1.5
    np.testing.assert_allclose(processed[0], expected / 2.0, rtol=1e-6)
    np.testing.assert_allclose(processed[1], logits_row() / 2.0, rtol=1e-6)


def test_a_large_logit_bias_forces_or_bans_a_token_even_for_greedy_rows():
    forced = row(SamplingParams(logit_bias={"9": 100.0}))
    banned = row(SamplingParams(logit_bias={"0": -100.0}))
    assert sample(np.tile(logits_row(), (2, 1)), [forced, banned]).tokens.tolist() == [9, 1]
    assert 0 not in draw(SamplingParams(temperature=1.0, logit_bias={"0": -100.0}), 2000).tolist()


@pytest.mark.parametrize("bias", [{"1": 100.5}, {"1": float("nan")}, {"-1": 1.0}])
def test_logit_bias_out_of_range_names_the_field(bias):
    with pytest.raises(ValueError, match=r"^logit_bias: "):
        SamplingParams(logit_bias=bias)


def test_only_temperature_rows_take_the_lean_draw() -> None:
    assert plain_temperature(SamplingParams(temperature=0.8))
    for params in (
        SamplingParams(),
        SamplingParams(temperature=0.8, top_p=0.9),
        SamplingParams(temperature=0.8, top_k=5),
        SamplingParams(temperature=0.8, logprobs=0),
        SamplingParams(temperature=0.8, presence_penalty=0.5),
        SamplingParams(temperature=0.8, min_new_tokens=2),
        SamplingParams(temperature=0.8, logit_bias={"3": 1.0}),
    ):
        assert not plain_temperature(params), params


@pytest.mark.parametrize("vocab", [VOCAB, 64, 200])  # within one block, exactly one, and padded blocks
def test_lean_draw_matches_the_softmax_over_block_boundaries(vocab: int) -> None:
    logits = np.random.default_rng(vocab).normal(scale=1.5, size=vocab).astype(np.float32)
    params = SamplingParams(temperature=0.7)
    rows = [row(params, vocab=vocab) for _ in range(6000)]
    for r, rng in zip(rows, request_rngs(5, len(rows)), strict=True):
        r.rng = rng
    tokens = sample(np.tile(logits, (len(rows), 1)), rows).tokens
    expected = np.exp(log_softmax(logits / 0.7))
    observed = np.bincount(tokens, minlength=vocab) / len(tokens)
    assert tokens.max() < vocab
    assert np.abs(observed - expected).max() < 0.03


def test_lean_and_processed_rows_share_a_batch_each_as_it_would_alone() -> None:
    x = np.random.default_rng(4).normal(size=(3, VOCAB)).astype(np.float32)
    seeded = SamplingParams(temperature=0.9, seed=3)
    top_k = SamplingParams(temperature=0.9, top_k=2, logprobs=1, seed=5)
    alone = int(sample(x[:1], [row(seeded, seed=3)]).tokens[0])
    out = sample(x, [row(seeded, seed=3), row(SamplingParams()), row(top_k, seed=5)])
    assert int(out.tokens[0]) == alone
    assert int(out.tokens[1]) == int(x[1].argmax())
    assert int(out.tokens[2]) in np.argsort(-x[2])[:2].tolist()
    assert out.logprobs[0] is None and out.logprobs[2] is not None
    assert out.top_logprobs[2] is not None and len(out.top_logprobs[2]) == 1


def test_inverse_cdf_finds_the_entry_across_blocks_and_skips_zero_weights() -> None:
    weights = np.zeros((4, 130))  # three blocks of 64, the last one padded
    weights[:, [0, 63, 64, 129]] = [1.0, 1.0, 1.0, 1.0]
    uniforms = np.array([0.1, 0.3, 0.6, 0.99])
    assert inverse_cdf(weights, uniforms).tolist() == [0, 63, 64, 129]
    assert inverse_cdf(weights[:1], np.array([0.25])).tolist() == [63]  # a boundary goes right
