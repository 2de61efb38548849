"""Incremental detokenisation: token ids in, text deltas out, never splitting a UTF-8 character.

Byte-level BPE can end a token in the middle of a multi-byte character; decoding then yields
U+FFFD. The delta is held back until the following tokens complete the character. Only a short
window of recent tokens is decoded each step (prefix/read offsets), so the cost stays flat.
"""

from __future__ import annotations

from tokenizers import Tokenizer

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Per-sequence state: feed one token at a time, get the text that became final."""

    def __init__(
        self, tokenizer: Tokenizer, skip_special_tokens: bool = True, single_token_cache: dict | None = None
    ) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        # Text of one-token windows, shareable by every sequence of a model with the same skip setting:
        # bounded by the vocabulary, and it saves one of the two decodes per token.
        self._single = {} if single_token_cache is None else single_token_cache
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the context window decoded for spacing
        self._read_offset = 0  # tokens before this are already emitted
        self._prefix_text = (
            ""  # decode of ids[prefix_offset:read_offset], kept so each token costs one decode
        )

    @property
    def token_ids(self) -> list[int]:
        return self._ids

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip)

    def add(self, token_id: int) -> str:
        """Append a token; return the newly final text (may be empty while a character is incomplete)."""
        self._ids.append(int(token_id))
        prefix = self._prefix_text
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) > len(prefix) and not full.endswith(_REPLACEMENT):
            delta = full[len(prefix) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            window = self._ids[self._prefix_offset : self._read_offset]
            if len(window) == 1:
                text = self._single.get(window[0])
                if text is None:
                    text = self._single[window[0]] = self._decode(window)
                self._prefix_text = text
            else:
                self._prefix_text = self._decode(window)
            return delta
        return ""

    def append(self, token_id: int) -> None:
        """Record a token without decoding it now; `flush` returns the text of everything held."""
        self._ids.append(int(token_id))

    def flush(self) -> str:
        """At the end of a sequence, whatever is still held (e.g. a truly invalid byte) is emitted."""
        prefix = self._prefix_text
        full = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        self._prefix_text = ""
        return full[len(prefix) :] if full.startswith(prefix) else ""
