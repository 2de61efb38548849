"""Tokenizers: exact round trips, the contract's special ids, and a tokenizer.json the service can read."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from training.data import data_root, read_text, split_text
from training.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    decode,
    encode,
    load_tokenizer,
    save_tokenizer,
    tokenizer_kind,
    train_tokenizer,
)

SHAKESPEARE = data_root() / "tinyshakespeare" / "input.txt"
ODD_TEXT = "Héllo,\r\n  wörld\t😀  trailing spaces   \n\nend"


@pytest.fixture(scope="module")
def shakespeare() -> tuple[str, str]:
    if not SHAKESPEARE.exists():
        pytest.skip("shared data sets not present")
    split = split_text(read_text(SHAKESPEARE))
    return split.train, split.val


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_shakespeare_validation_text_round_trips_exactly(kind: str, shakespeare: tuple[str, str]) -> None:
    train, val = shakespeare
    tokenizer = train_tokenizer(kind, [train], vocab_size=512)
    ids = encode(tokenizer, val)
    assert decode(tokenizer, ids) == val
    assert UNK_ID not in ids


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_special_tokens_sit_at_the_contract_ids_and_survive_save_and_load(kind: str, tmp_path: Path) -> None:
    tokenizer = train_tokenizer(kind, ["some training text, with punctuation!\n"], vocab_size=300)
    path = save_tokenizer(tokenizer, tmp_path / "tokenizer.json")
    # The service loads the file with the plain tokenizers API, so check through that API.
    loaded = Tokenizer.from_file(str(path))
    ids = {token: loaded.token_to_id(token) for token in ("<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>")}
    assert ids == {"<|pad|>": PAD_ID, "<|bos|>": BOS_ID, "<|eos|>": EOS_ID, "<|unk|>": UNK_ID}
    assert tokenizer_kind(load_tokenizer(path)) == kind


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_encoding_adds_no_bos_or_eos(kind: str) -> None:
    tokenizer = train_tokenizer(kind, ["abc abc"], vocab_size=300)
    ids = encode(tokenizer, "abc")
    assert BOS_ID not in ids and EOS_ID not in ids
    assert decode(tokenizer, [BOS_ID, *ids, EOS_ID]) == "abc"


def test_byte_level_bpe_round_trips_text_it_never_saw() -> None:
    tokenizer = train_tokenizer("bpe", ["plain ascii text only\n"] * 10, vocab_size=300)
    assert decode(tokenizer, encode(tokenizer, ODD_TEXT)) == ODD_TEXT
    assert UNK_ID not in encode(tokenizer, ODD_TEXT)


def test_bpe_learns_the_requested_vocabulary_size(shakespeare: tuple[str, str]) -> None:
    tokenizer = train_tokenizer("bpe", [shakespeare[0]], vocab_size=700)
    assert tokenizer.get_vocab_size() == 700
    # Merges must pay off: fewer tokens than bytes on held-out text.
    assert len(encode(tokenizer, shakespeare[1])) < 0.6 * len(shakespeare[1])


def test_char_tokenizer_is_one_token_per_character_with_unknowns_as_unk() -> None:
    tokenizer = train_tokenizer("char", ["ab\n", "ba "])
    assert tokenizer.get_vocab_size() == 4 + 4  # specials + {"\n", " ", "a", "b"}
    assert encode(tokenizer, "ab \n") == [6, 7, 5, 4]  # sorted alphabet after the specials
    assert encode(tokenizer, "aXb") == [6, UNK_ID, 7]
    assert decode(tokenizer, encode(tokenizer, " a\nb ")) == " a\nb "


def test_unknown_kind_and_too_small_bpe_vocab_are_rejected() -> None:
    with pytest.raises(ValueError):
        train_tokenizer("wordpiece", ["text"])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        train_tokenizer("bpe", ["text"], vocab_size=100)
