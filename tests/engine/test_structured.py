"""Structured generation in the engine, on both committed language models (Transformer and LSTM) with
their own byte-level BPE tokenizers: every seeded sample of a batch of 200 matches its constraint."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import jsonschema
import pytest

from service import metrics
from service.engine import (
    Constraint,
    ConstraintError,
    GenerationEngine,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
)
from service.engine.constraints import ConstraintLimits, GrammarCompiler
from tests.engine.engine_helpers import make_engine, run

MODELS = ["shakespeare-gpt", "shakespeare-lstm"]
SAMPLES = 200
PER_REQUEST = 50  # 4 requests of n=50 share the batch with each other
SCHEMA = {
    "type": "object",
    "properties": {
        "speaker": {"enum": ["ROMEO", "JULIET", "NURSE"]},
        "line": {"type": "string", "maxLength": 12},
        "act": {"type": "integer", "minimum": 1, "maximum": 5},
        "aside": {"type": "boolean"},
    },
    "required": ["speaker", "line", "act", "aside"],
    "additionalProperties": False,
}
REGEX = r"(ROMEO|JULIET): [A-Z][a-z]{1,9}( [a-z]{1,9}){0,3}[.!?]"
CHOICES = ["Montague", "Capulet", "neither, good sir"]
GRAMMAR = 'start: "I am " NAME " of " HOUSE "."\nNAME: /[A-Z][a-z]{1,8}/\nHOUSE: "Verona" | "Mantua"'
GRAMMAR_AS_REGEX = r"I am [A-Z][a-z]{1,8} of (Verona|Mantua)\."


@pytest.fixture(scope="module", params=MODELS)
def engine(request: pytest.FixtureRequest) -> GenerationEngine:
    eng = make_engine(Path("exported_models") / request.param, max_slots=64, max_queue=256, warmup=False)
    yield eng
    run(eng.stop(5))


def constrained(
    constraint: Constraint, seed: int, n: int = PER_REQUEST, **params: object
) -> GenerationRequest:
    defaults: dict[str, object] = {"max_new_tokens": 48, "temperature": 1.0, "n": n, "seed": seed}
    defaults.update(params)
    return GenerationRequest(prompt="ROMEO:\n", params=SamplingParams(constraint=constraint, **defaults))


async def results_of(engine: GenerationEngine, requests: list[GenerationRequest]) -> list[GenerationResult]:
    handles = [engine.submit(r) for r in requests]
    return list(await asyncio.gather(*(h.result() for h in handles)))


def two_hundred(engine: GenerationEngine, constraint: Constraint, **params: object) -> list[str]:
    """200 seeded samples, submitted together so they share batches; every one must end on its own."""
    requests = [constrained(constraint, seed, **params) for seed in range(SAMPLES // PER_REQUEST)]
    outputs = [o for r in run(results_of(engine, requests)) for o in r.outputs]
    assert len(outputs) == SAMPLES
    unfinished = [o.text for o in outputs if o.finish_reason != "stop"]
    assert not unfinished, f"{len(unfinished)} samples did not complete: {unfinished[:3]}"
    return [o.text for o in outputs]


def test_json_schema_samples_all_parse_and_validate(engine: GenerationEngine) -> None:
    texts = two_hundred(engine, Constraint("json", json.dumps(SCHEMA)), top_p=0.95, max_new_tokens=96)
    for text in texts:
        jsonschema.validate(json.loads(text), SCHEMA)
        assert list(json.loads(text)) == list(SCHEMA["properties"])  # in the schema's order
    assert len(set(texts)) > 20  # sampled, not one forced string


def test_regex_samples_all_match(engine: GenerationEngine) -> None:
    texts = two_hundred(engine, Constraint("regex", REGEX), top_k=8)
    assert all(re.fullmatch(REGEX, t) for t in texts), [t for t in texts if not re.fullmatch(REGEX, t)][:3]


def test_choice_samples_are_all_members(engine: GenerationEngine) -> None:
    texts = two_hundred(engine, Constraint("choice", json.dumps(CHOICES)), repetition_penalty=1.3)
    assert set(texts) <= set(CHOICES)
    assert len(set(texts)) > 1


def test_grammar_samples_all_parse(engine: GenerationEngine) -> None:
    texts = two_hundred(engine, Constraint("grammar", GRAMMAR), min_p=0.05)
    assert all(re.fullmatch(GRAMMAR_AS_REGEX, t) for t in texts)


def test_seeded_constrained_request_is_the_same_alone_and_in_a_full_batch(engine: GenerationEngine) -> None:
    probe = constrained(Constraint("json", json.dumps(SCHEMA)), seed=7, n=2, logprobs=2)
    (alone,) = run(results_of(engine, [probe]))
    # Fill every slot: free sampled traffic, other constraints, then the probe again in the middle.
    free = [
        GenerationRequest(prompt="JULIET:", params=SamplingParams(max_new_tokens=40, temperature=1.0, n=8))
        for _ in range(3)
    ]
    others = [constrained(Constraint("regex", REGEX), seed=s, n=8) for s in range(3)]
    crowd = [*free[:2], others[0], probe, others[1], free[2], others[2]]
    together = run(results_of(engine, crowd))[3]
    for a, b in zip(alone.outputs, together.outputs, strict=True):
        assert (a.token_ids, a.text, a.finish_reason) == (b.token_ids, b.text, b.finish_reason)
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_logprobs_n_and_stop_strings_work_under_a_constraint(engine: GenerationEngine) -> None:
    choice = Constraint("choice", json.dumps(["Capulet, my lord", "Montague, my lord"]))
    (res,) = run(results_of(engine, [constrained(choice, seed=3, n=6, logprobs=3, stop=(", my",))]))
    assert len(res.outputs) == 6
    for out in res.outputs:
        assert out.text in ("Capulet", "Montague")
        assert (out.finish_reason, out.stop_reason) == ("stop", ", my")
        assert all(lp is not None and lp <= 0.0 for lp in out.logprobs)
        # Masked tokens have no probability: every reported alternative is a finite, allowed one.
        assert all(len(top) <= 3 for top in out.top_logprobs if top is not None)


def test_an_empty_schema_is_bounded_by_max_tokens(engine: GenerationEngine) -> None:
    # vLLM #52011: "{}" allows any JSON, and a never-ending number is JSON too. It must end at max_tokens.
    (res,) = run(results_of(engine, [constrained(Constraint("json", "{}"), seed=0, n=8, max_new_tokens=24)]))
    for out in res.outputs:
        assert out.finish_reason in ("stop", "length")
        assert len(out.token_ids) <= 24
        if out.finish_reason == "stop":
            json.loads(out.text)


def test_a_constraint_too_long_for_max_tokens_ends_with_length_and_the_text_so_far(
    engine: GenerationEngine,
) -> None:
    long_regex = Constraint("regex", r"(to be or not to be ){20}that is the question")
    (res,) = run(results_of(engine, [constrained(long_regex, seed=0, n=2, max_new_tokens=6)]))
    for out in res.outputs:
        assert out.finish_reason == "length"
        assert len(out.token_ids) == 6
        assert out.text and "to be or not to be".startswith(out.text[:18])


def test_min_tokens_does_not_block_a_completed_choice(engine: GenerationEngine) -> None:
    choice = Constraint("choice", json.dumps(["ay"]))
    (res,) = run(results_of(engine, [constrained(choice, seed=0, n=1, min_new_tokens=5, ignore_eos=True)]))
    assert (res.outputs[0].text, res.outputs[0].finish_reason) == ("ay", "stop")


def test_a_repeated_schema_compiles_once(engine: GenerationEngine) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    c = Constraint("json", json.dumps({**schema, "title": engine.name}))  # new to this engine's cache
    hits = metrics.GRAMMAR_CACHE.labels(model=engine.name, result="hit")
    misses = metrics.GRAMMAR_CACHE.labels(model=engine.name, result="miss")
    h0, m0 = hits._value.get(), misses._value.get()
    run(results_of(engine, [constrained(c, seed=s, n=1, max_new_tokens=4) for s in range(3)]))
    assert (misses._value.get() - m0, hits._value.get() - h0) == (1, 2)


@pytest.mark.parametrize(
    ("constraint", "says"),
    [
        (Constraint("regex", "a(b", "structured_outputs.regex"), "structured_outputs.regex: "),
        (Constraint("json", '{"type": "wat"}', "response_format.json_schema.schema"), "Invalid type"),
        (Constraint("grammar", "start: nowhere\n", "structured_outputs.grammar"), "nowhere"),
        (Constraint("choice", "[]", "structured_outputs.choice"), "1 to 1024 choices"),
        (Constraint("regex", "x" * 70_000, "structured_outputs.regex"), "the limit is 65536"),
    ],
)
def test_invalid_constraints_are_refused_before_queueing(
    engine: GenerationEngine, constraint: Constraint, says: str
) -> None:
    with pytest.raises(ConstraintError) as caught:
        run(engine.compile_constraint(constraint))
    assert str(caught.value).startswith(constraint.field + ": ")
    assert says in str(caught.value)
    assert engine.stats().waiting == 0


def test_grammar_size_and_compile_time_limits_name_the_field() -> None:
    tokenizer_json = (Path("exported_models/shakespeare-gpt/tokenizer.json")).read_text()
    many = Constraint("choice", json.dumps([f"line {i}" for i in range(400)]), "structured_outputs.choice")
    small = GrammarCompiler(tokenizer_json, 2048, 2, "limits-test", ConstraintLimits(max_grammar_size=100))
    with pytest.raises(ConstraintError, match=r"^structured_outputs\.choice: "):
        small.compile(many)
    hasty = GrammarCompiler(tokenizer_json, 2048, 2, "limits-test", ConstraintLimits(compile_timeout_s=1e-9))
    with pytest.raises(ConstraintError, match=r"^structured_outputs\.choice: compiling took .* the limit is"):
        hasty.compile(many)
    with pytest.raises(ConstraintError, match="compiling took"):  # a slow grammar is not cached either
        hasty.compile(many)
