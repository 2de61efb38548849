"""Streamed messages: tokens that reach a lagging stream together leave in one message, losslessly."""

from __future__ import annotations

from types import SimpleNamespace

from harness.loadgen import count_token_ids
from service.api.native import stream_messages
from service.api.rest_support import sse
from service.engine import FinishEvent, SamplingParams, TokenEvent, Usage


def fake_generation(**params: object) -> SimpleNamespace:
    request = SimpleNamespace(params=SamplingParams(**params))
    return SimpleNamespace(
        record=SimpleNamespace(request_id="r1"), model="m", handles=[SimpleNamespace(request=request)]
    )


def test_consecutive_tokens_of_a_sample_share_a_message_and_finishes_stay_apart() -> None:
    events = [
        TokenEvent(0, 5, "a"),
        TokenEvent(0, 6, "b"),
        TokenEvent(1, 7, "x"),
        TokenEvent(1, 8, "y"),
        FinishEvent(1, "length", "z", usage=Usage(3, 2)),
        TokenEvent(0, 9, "c"),
        FinishEvent(0, "length", "", usage=Usage(3, 3)),
    ]
    messages = stream_messages(fake_generation(n=2), events, first=True)
    assert [(m["index"], m["text"], m.get("token_ids"), m.get("finish_reason")) for m in messages] == [
        (0, "ab", [5, 6], None),
        (1, "xy", [7, 8], None),
        (1, "z", None, "length"),
        (0, "c", [9], None),
        (0, "", None, "length"),
    ]
    # Nothing is lost: joined in order, the messages give back every token and all the text.
    assert [t for m in messages for t in m.get("token_ids", [])] == [5, 6, 7, 8, 9]


def test_one_event_is_one_message_and_the_load_generator_counts_merged_ids() -> None:
    (single,) = stream_messages(fake_generation(), [TokenEvent(0, 5, "a")], first=True)
    assert single["token_ids"] == [5]
    merged = stream_messages(fake_generation(), [TokenEvent(0, i, "t") for i in (5, 6, 7)], first=True)
    line = sse(merged[0]).splitlines()[0]
    assert count_token_ids(line) == 3 and count_token_ids(sse(single).splitlines()[0]) == 1
