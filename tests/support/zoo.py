"""Small real models of other kinds than the embedding service, for the tools that serve any model: `words` (a
decoupled model with `generate`'s tensors that streams its prompt back word by word) and `tensors` (numeric, with
a variable dimension and an optional input). Both load in about a second."""

from __future__ import annotations

import shutil
from pathlib import Path

ZOO = Path(__file__).with_name("model_zoo")
WORDS = "words"  # streams each word of text_input as one response, `delay_ms` apart (request parameter, default 5)
TENSORS = "tensors"  # SUM[b, i] = sum(X[b, i, :]) + BIAS[b]; X INT32 [-1, 3], BIAS FP32 [1] optional


def write_zoo(repository: Path, *names: str) -> Path:
    """Copy the named models (default: all) into `repository`; Triton serves the copy (its stubs write caches)."""
    for name in names or (WORDS, TENSORS):
        shutil.copytree(ZOO / name, repository / name)
    return repository
