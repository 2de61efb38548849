import pytest

from service.engine import SamplingParams


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_new_tokens", 0),
        ("temperature", -0.1),
        ("temperature", float("nan")),
        ("top_k", -1),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("min_p", 1.1),
        ("repetition_penalty", 0.0),
        ("presence_penalty", 2.5),
        ("frequency_penalty", -3.0),
        ("n", 0),
        ("seed", -1),
        ("logprobs", 21),
        ("stop", ("",)),
        ("stop_token_ids", (-1,)),
    ],
)
def test_out_of_range_value_raises_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field}:"):
        SamplingParams(**{field: value})


def test_defaults_are_greedy_and_lists_become_tuples():
    params = SamplingParams(stop=["a", "b"], stop_token_ids=[5])
    assert params.greedy
    assert params.stop == ("a", "b")
    assert params.stop_token_ids == (5,)


def test_min_new_tokens_cannot_exceed_max_new_tokens():
    with pytest.raises(ValueError, match=r"^min_new_tokens:"):
        SamplingParams(max_new_tokens=4, min_new_tokens=5)
