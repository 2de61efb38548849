"""Export-time parity: the ONNX graph must reproduce torch, or the export fails loudly.

Each check returns {case: max |Δ|} for the manifest. Decoder cases drive ORT the way the engine does
(in-place KV buffers bound by pointer), so a binding mistake shows up here and not in production.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnxruntime as ort

from training.export import torch_reference as ref
from training.export.ort_decoder import InPlaceDecoder, greedy_with_logits
from training.models.rnn import RNNLM, RNNClassifier
from training.models.transformer import TransformerClassifier, TransformerLM

TOLERANCE = 1e-4
DECODE_STEPS = 10
GREEDY_TOKENS = 50


class ParityError(RuntimeError):
    """The exported graph disagrees with the torch model beyond tolerance."""


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0


def require(diffs: dict[str, float], tolerance: float) -> dict[str, float]:
    """Raise naming every case over tolerance; otherwise return the diffs for the manifest."""
    bad = {case: diff for case, diff in diffs.items() if not diff <= tolerance}
    if bad:
        raise ParityError(f"ONNX export differs from torch beyond {tolerance}: {bad}")
    return diffs


def greedy_logit_diff(
    ours: Sequence[int],
    theirs: Sequence[int],
    ort_logits: np.ndarray,
    torch_logits: np.ndarray,
    tolerance: float,
) -> float:
    """Max |logit diff| over the greedy steps both took alike. Tokens must match one for one; a
    divergence is forgiven only at a genuine tie within tolerance, and ends the comparison there."""
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if a != b:
            gap = float(torch_logits[step, b] - torch_logits[step, a])
            if gap > tolerance:
                raise ParityError(f"greedy token {step}: ONNX chose {a}, torch {b} (logit gap {gap:.3g})")
            return max_diff(ort_logits[:step], torch_logits[:step])
    return max_diff(ort_logits[: len(ours)], torch_logits[: len(ours)])


def token_sampler(
    context_length: int, vocab_size: int, rng: np.random.Generator
) -> Callable[[int], list[int]]:
    """A sampler of random prompts of a given length within the vocabulary."""

    def sample(length: int) -> list[int]:
        return rng.integers(0, vocab_size, size=min(length, context_length)).tolist()

    return sample


def check_decoder(
    model: TransformerLM, session: ort.InferenceSession, seed: int = 0, tolerance: float = TOLERANCE
) -> dict[str, float]:
    """Prefill, decode steps, chunked prefill, a ragged batch and greedy generation, all within context."""
    model.eval()
    ctx = model.config.context_length
    sample = token_sampler(ctx, model.config.vocab_size, np.random.default_rng(seed))
    diffs: dict[str, float] = {}

    steps = min(DECODE_STEPS, ctx // 2)
    prompt = sample(min(24, ctx - steps))
    decoder = InPlaceDecoder(session, rows=1)
    diffs["prefill"] = max_diff(decoder.step(0, [prompt])[0], ref.lm_logits(model, prompt))
    tail = sample(steps)
    decoded = [decoder.step(0, [[token]])[0, 0] for token in tail]
    diffs["decode_steps"] = max_diff(np.stack(decoded), ref.lm_logits(model, prompt + tail)[len(prompt) :])

    split = len(prompt) // 3
    chunked = InPlaceDecoder(session, rows=1)
    chunked.step(0, [prompt[:split]])
    diffs["chunked_prefill"] = max_diff(
        chunked.step(0, [prompt[split:]])[0], ref.lm_logits(model, prompt)[split:]
    )

    rows = [sample(n) for n in (len(prompt), max(1, len(prompt) // 2), 3)]
    batch = InPlaceDecoder(session, rows=len(rows))
    logits = batch.step(0, rows)
    ragged = [max_diff(logits[r, : len(row)], ref.lm_logits(model, row)) for r, row in enumerate(rows)]
    for _ in range(steps):
        new = [sample(1) for _ in rows]
        logits = batch.step(0, new)
        for r, row in enumerate(rows):
            row += new[r]
            ragged.append(max_diff(logits[r, 0], ref.lm_logits(model, row)[-1]))
    diffs["ragged_batch"] = max(ragged)

    greedy_prompt = sample(min(8, ctx // 2))
    n_new = min(GREEDY_TOKENS, ctx - len(greedy_prompt))
    theirs, torch_logits = ref.greedy_with_logits(model, greedy_prompt, n_new)
    ours, ort_logits = greedy_with_logits(session, greedy_prompt, n_new)
    diffs["greedy"] = greedy_logit_diff(ours, theirs, ort_logits, torch_logits, tolerance)
    return require(diffs, tolerance)


def run_recurrent(
    session: ort.InferenceSession, ids: Sequence[Sequence[int]], state: dict[str, np.ndarray] | None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One call of a recurrent graph: logits and the state to pass to the next call."""
    names = [i.name for i in session.get_inputs() if i.name.startswith("state_")]
    if state is None:
        layers, _, hidden = session.get_inputs()[1].shape
        state = {name: np.zeros((layers, len(ids), hidden), np.float32) for name in names}
    outputs = session.run(None, {"input_ids": np.asarray(ids, np.int64), **state})
    named = dict(zip([o.name for o in session.get_outputs()], outputs, strict=True))
    return named["logits"], {name: named[f"{name}_out"] for name in names}


def recurrent_greedy(
    session: ort.InferenceSession, prompt: Sequence[int], n_new: int
) -> tuple[list[int], np.ndarray]:
    logits, state = run_recurrent(session, [list(prompt)], None)
    tokens: list[int] = []
    chosen: list[np.ndarray] = []
    for _ in range(n_new):
        chosen.append(logits[0, -1])
        tokens.append(int(np.argmax(chosen[-1])))
        logits, state = run_recurrent(session, [[tokens[-1]]], state)
    return tokens, np.stack(chosen)


def check_recurrent(
    model: RNNLM, session: ort.InferenceSession, seed: int = 0, tolerance: float = TOLERANCE
) -> dict[str, float]:
    """Prefill, decode steps, rows of different lengths batched for decode, and greedy generation."""
    model.eval()
    sample = token_sampler(10**9, model.config.vocab_size, np.random.default_rng(seed))
    diffs: dict[str, float] = {}
    prompt = sample(24)
    logits, state = run_recurrent(session, [prompt], None)
    diffs["prefill"] = max_diff(logits[0], ref.lm_logits(model, prompt))
    tail = sample(DECODE_STEPS)
    steps = []
    for token in tail:
        logits, state = run_recurrent(session, [[token]], state)
        steps.append(logits[0, 0])
    diffs["decode_steps"] = max_diff(np.stack(steps), ref.lm_logits(model, prompt + tail)[len(prompt) :])

    # The engine prefills each row alone, then batches one-token steps over rows of different lengths.
    rows = [sample(n) for n in (17, 5, 1)]
    states = [run_recurrent(session, [row], None)[1] for row in rows]
    batched = {name: np.concatenate([s[name] for s in states], axis=1) for name in states[0]}
    ragged = []
    for _ in range(DECODE_STEPS):
        new = [sample(1) for _ in rows]
        logits, batched = run_recurrent(session, new, batched)
        for r, row in enumerate(rows):
            row += new[r]
            ragged.append(max_diff(logits[r, 0], ref.lm_logits(model, row)[-1]))
    diffs["ragged_batch"] = max(ragged)

    greedy_prompt = sample(8)
    theirs, torch_logits = ref.greedy_with_logits(model, greedy_prompt, GREEDY_TOKENS)
    ours, ort_logits = recurrent_greedy(session, greedy_prompt, GREEDY_TOKENS)
    diffs["greedy"] = greedy_logit_diff(ours, theirs, ort_logits, torch_logits, tolerance)
    return require(diffs, tolerance)


def padded_batch(
    lengths: Sequence[int], vocab_size: int, rng: np.random.Generator, first_id: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded random ids (pad 0) and their mask; ids avoid the special tokens."""
    width = max(lengths)
    ids = np.zeros((len(lengths), width), np.int64)
    mask = np.zeros_like(ids)
    for r, n in enumerate(lengths):
        ids[r, :n] = rng.integers(first_id, vocab_size, size=n)
        mask[r, :n] = 1
    return ids, mask


def check_classifier(
    model: TransformerClassifier | RNNClassifier,
    session: ort.InferenceSession,
    seed: int = 0,
    tolerance: float = TOLERANCE,
    max_length: int = 40,
) -> dict[str, float]:
    """Probabilities on a padded batch of mixed lengths, and on a single unpadded row."""
    model.eval()
    rng = np.random.default_rng(seed)
    if isinstance(model, TransformerClassifier):
        vocab, max_length = model.lm.config.vocab_size, min(max_length, model.lm.config.context_length)
    else:
        vocab = model.config.vocab_size
    diffs = {}
    for case, lengths in (
        ("padded_batch", [max_length, 1, max_length // 2, 7]),
        ("single_row", [max_length // 3]),
    ):
        ids, mask = padded_batch(lengths, vocab, rng)
        (probabilities,) = session.run(["probabilities"], {"input_ids": ids, "attention_mask": mask})
        diffs[case] = max_diff(probabilities, ref.classifier_probabilities(model, ids, mask))
    return require(diffs, tolerance)
