"""Byte-level BPE and character tokenizers, built with Hugging Face `tokenizers`.

Both are saved as a standard `tokenizer.json`, the only tokenizer format the service reads, and
both put the special tokens at the ids the artifact contract fixes: pad 0, bos 1, eos 2, unk 3.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

TokenizerKind = Literal["bpe", "char"]

PAD, BOS, EOS, UNK = "<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_IDS: dict[str, int] = {PAD: PAD_ID, BOS: BOS_ID, EOS: EOS_ID, UNK: UNK_ID}
# `[\s\S]` matches any character, newlines included, whatever the regex engine's dot means.
ANY_CHARACTER = Regex(r"[\s\S]")


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE: every string is encodable (no unk) and decoding restores it exactly."""
    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(f"byte-level BPE needs vocab_size >= {len(SPECIAL_TOKENS) + 256}, got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    # No prefix space: an added space would come back on decode and break the exact round trip.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    check_special_ids(tokenizer)
    return tokenizer


def train_char_tokenizer(texts: Iterable[str]) -> Tokenizer:
    """One token per character seen in `texts`; characters never seen encode as `<|unk|>`."""
    alphabet = sorted(set().union(*(set(text) for text in texts)))
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({char: len(SPECIAL_TOKENS) + index for index, char in enumerate(alphabet)})
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(ANY_CHARACTER, behavior="isolated")
    # Fuse joins the pieces with nothing between them (the default decode would insert spaces).
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    check_special_ids(tokenizer)
    return tokenizer


def train_tokenizer(kind: TokenizerKind, texts: Sequence[str], vocab_size: int | None = None) -> Tokenizer:
    """Dispatch on the recipe's `tokenizer.kind`; `vocab_size` matters only for BPE."""
    if kind == "bpe":
        if vocab_size is None:
            raise ValueError("a bpe tokenizer needs vocab_size")
        return train_bpe_tokenizer(texts, vocab_size)
    if kind == "char":
        return train_char_tokenizer(texts)
    raise ValueError(f"unknown tokenizer kind {kind!r}; choose 'bpe' or 'char'")


def check_special_ids(tokenizer: Tokenizer) -> None:
    """Fail loudly if a special token is missing or off its contract id (the service trusts them)."""
    for token, expected in SPECIAL_IDS.items():
        actual = tokenizer.token_to_id(token)
        if actual != expected:
            raise ValueError(f"special token {token} has id {actual}, the contract says {expected}")


def tokenizer_kind(tokenizer: Tokenizer) -> TokenizerKind:
    """Which of our two kinds a loaded tokenizer is, read from its model type."""
    return "bpe" if isinstance(tokenizer.model, models.BPE) else "char"


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> Path:
    """Write `tokenizer.json` (creating its folder)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(target))
    return target


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a `tokenizer.json` and insist on the contract's special ids."""
    tokenizer = Tokenizer.from_file(str(path))
    check_special_ids(tokenizer)
    return tokenizer


def encode(tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of raw text: no BOS/EOS added, as language models are trained on the bare stream."""
    return tokenizer.encode(text, add_special_tokens=False).ids


def decode(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
    """Text of token ids, special tokens dropped."""
    return tokenizer.decode(list(ids), skip_special_tokens=True)
