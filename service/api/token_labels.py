"""How OpenAI-style logprobs name tokens (`tokens`, the keys of `top_logprobs`).

A token is named by its text. A byte-level token that holds only part of a UTF-8 character has no
text of its own (decoding it gives U+FFFD, and different such tokens would collide as keys), so it
is named by its bytes instead, as vLLM and OpenAI do: "bytes:\\xf0\\x9f".
"""

from __future__ import annotations

import re
from functools import cache

from tokenizers import Tokenizer, decoders

BYTES_PREFIX = "bytes:"
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # SentencePiece's byte fallback


@cache
def _byte_of_char() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character that stands for each byte in the vocab."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[chr(byte)] = byte
        else:
            table[chr(256 + extra)] = byte
            extra += 1
    return table


class TokenLabels:
    """Per-tokenizer names of tokens, cached (a vocabulary is small; logprobs name many tokens)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._byte_level = isinstance(tokenizer.decoder, decoders.ByteLevel)
        self._labels: dict[int, str] = {}

    def label(self, token_id: int) -> str:
        label = self._labels.get(token_id)
        if label is None:
            label = self._labels[token_id] = self._make(token_id)
        return label

    def _make(self, token_id: int) -> str:
        text = self.tokenizer.decode([token_id], skip_special_tokens=False)
        if "\ufffd" not in text:
            return text
        data = self._bytes(token_id)
        if data is None:
            return text
        try:
            return data.decode("utf-8")  # a real U+FFFD in the text
        except UnicodeDecodeError:
            return BYTES_PREFIX + "".join(f"\\x{b:02x}" for b in data)

    def _bytes(self, token_id: int) -> bytes | None:
        """The bytes a token stands for, where the vocabulary says (byte-level BPE, byte fallback)."""
        piece = self.tokenizer.id_to_token(token_id)
        if piece is None:
            return None
        if self._byte_level:
            table = _byte_of_char()
            if all(char in table for char in piece):
                return bytes(table[char] for char in piece)
            return None
        match = _BYTE_TOKEN.match(piece)
        return bytes([int(match.group(1), 16)]) if match else None
