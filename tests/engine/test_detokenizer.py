from service.engine.detokenizer import IncrementalDetokenizer

TEXTS = ["日本語のテキスト 🙂🚀 emoji", "Héllo wörld, naïve café.", "plain ascii text, nothing odd"]


def test_deltas_concatenate_to_the_full_decode_and_never_split_a_character(bpe_tokenizer):
    for text in TEXTS:
        ids = bpe_tokenizer.encode(text).ids
        detok = IncrementalDetokenizer(bpe_tokenizer)
        deltas = [detok.add(t) for t in ids]
        deltas.append(detok.flush())
        assert "".join(deltas) == bpe_tokenizer.decode(ids) == text
        assert all("\ufffd" not in d for d in deltas)


def test_multibyte_characters_are_split_across_tokens_in_this_tokenizer(bpe_tokenizer):
    # Guards the test above: it only means something if some token ends mid-character.
    ids = bpe_tokenizer.encode("🙂🚀").ids
    pieces = [bpe_tokenizer.decode([t]) for t in ids]
    assert any("\ufffd" in p for p in pieces)


def test_incomplete_character_is_held_until_completed(bpe_tokenizer):
    ids = bpe_tokenizer.encode("🙂").ids
    detok = IncrementalDetokenizer(bpe_tokenizer)
    deltas = [detok.add(t) for t in ids]
    assert deltas[:-1] == [""] * (len(ids) - 1)
    assert deltas[-1] == "🙂"


def test_special_tokens_are_skipped_by_default(bpe_tokenizer):
    eos = bpe_tokenizer.token_to_id("<|eos|>")
    detok = IncrementalDetokenizer(bpe_tokenizer)
    text = "".join(detok.add(t) for t in [*bpe_tokenizer.encode("ab").ids, eos])
    assert text == "ab"


def test_flush_emits_an_invalid_trailing_byte_rather_than_dropping_it(bpe_tokenizer):
    ids = bpe_tokenizer.encode("🙂").ids[:1]
    detok = IncrementalDetokenizer(bpe_tokenizer)
    assert detok.add(ids[0]) == ""
    assert detok.flush() == "\ufffd"
