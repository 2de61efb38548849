from service.engine.stop_strings import StopStringMatcher


def stream(matcher: StopStringMatcher, pieces: list[str]) -> tuple[list[str], str | None]:
    emitted = []
    for piece in pieces:
        check = matcher.feed(piece)
        emitted.append(check.text)
        if check.matched is not None:
            return emitted, check.matched
    emitted.append(matcher.flush())
    return emitted, None


def test_stop_string_split_across_tokens_is_never_emitted():
    emitted, matched = stream(StopStringMatcher(("END",)), ["hello E", "N", "D and more"])
    assert matched == "END"
    assert "".join(emitted) == "hello "
    # While "E" and "EN" could still become "END", nothing past "hello " was shown.
    assert emitted[:2] == ["hello ", ""]


def test_false_start_is_released_once_it_cannot_match():
    emitted, matched = stream(StopStringMatcher(("END",)), ["E", "N", "X", "tail"])
    assert matched is None
    assert emitted == ["", "", "ENX", "tail", ""]


def test_held_back_text_is_flushed_at_the_end():
    emitted, matched = stream(StopStringMatcher(("\n\n",)), ["line", "\n"])
    assert matched is None
    assert emitted == ["line", "", "\n"]


def test_earliest_of_several_stop_strings_wins():
    emitted, matched = stream(StopStringMatcher(("world", "lo w")), ["hello world"])
    assert matched == "lo w"
    assert "".join(emitted) == "hel"


def test_stop_string_inside_one_token_truncates_before_it():
    emitted, matched = stream(StopStringMatcher(("stop",)), ["go stop now"])
    assert (emitted, matched) == (["go "], "stop")


def test_no_stop_strings_passes_text_through():
    matcher = StopStringMatcher(())
    assert matcher.feed("abc").text == "abc"
    assert matcher.flush() == ""
