"""Shared fixtures for the engine tests: a small byte-level BPE tokenizer trained in milliseconds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIALS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>"]
CORPUS = [
    "To be, or not to be, that is the question.",
    "Héllo wörld, naïve café. Ünïcödé everywhere.",
    "日本語のテキスト 🙂🚀 emoji and CJK split across byte-level tokens.",
] * 20


def train_bpe(vocab_size: int = 300) -> Tokenizer:
    """Byte-level BPE with the contract's special tokens (ids 0..3); few merges, so multi-byte
    characters are split across tokens, which is what the incremental detokeniser must survive."""
    tok = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


@pytest.fixture(scope="session")
def bpe_tokenizer() -> Tokenizer:
    return train_bpe()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`tiny_model(kind)`: the exporter's tiny seeded model of that kind, exported once per session
    (each export runs torch parity checks, the slowest part of these tests)."""
    from harness.tiny_models import make_tiny_model_dir

    made: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in made:
            made[kind] = make_tiny_model_dir(tmp_path_factory.mktemp(f"tiny-{kind}"), kind, seed=0)
        return made[kind]

    return get
