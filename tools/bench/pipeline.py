"""The plain-Python logic of the repository's models, imported from their folders without Triton.

Each model keeps its logic beside its version folders (where its model.py finds it); this module loads
those same files so tests and benchmarks compute embeddings in-process exactly as the service does.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from types import ModuleType

import numpy as np

from tools import repository as repository_model
from tools import settings
from tools.errors import UsageError

LOGIC_MODULES = {
    "tokenization": settings.TOKENIZER_MODEL,
    "onnx_encoder": settings.ENCODER_MODEL,
    "pooling": settings.ENCODER_MODEL,
}


@cache
def load(module_name: str, repository: Path = settings.MODEL_REPOSITORY) -> ModuleType:
    """Import `<repository>/<model>/<module_name>.py` once, under its own name (as model.py does)."""
    path = repository / LOGIC_MODULES[module_name] / f"{module_name}.py"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@cache
def configured_max_length(repository: Path = settings.MODEL_REPOSITORY) -> int:
    """The tokenizer's `max_length` parameter as its config.pbtxt sets it: in-process runs truncate the same way."""
    config = repository_model.load_model(repository / settings.TOKENIZER_MODEL).config
    return int(config.parameters["max_length"].string_value)


def check_repository(repository: Path) -> None:
    """Refuse, before any work, a repository that does not hold the pipeline's model logic."""
    if not repository.is_dir():
        raise UsageError(f"--repository {repository} is not a folder: give the model repository to benchmark")
    missing = [f"{model}/{module}.py" for module, model in LOGIC_MODULES.items()
               if not (repository / model / f"{module}.py").is_file()]
    if missing:
        raise UsageError(f"--repository {repository} lacks the embedding pipeline's model logic: {', '.join(missing)}")


@cache
def reference_pipeline(max_length: int | None = None, intra_op_threads: int = 1,
                       repository: Path = settings.MODEL_REPOSITORY):
    """(tokenizer, encoder) built from the model logic, for in-process embeddings."""
    tokenizer = load("tokenization", repository).TextTokenizer(max_length or configured_max_length(repository))
    encoding = load("onnx_encoder", repository)
    encoder = encoding.OnnxEncoder(encoding.EncoderSettings(intra_op_threads=intra_op_threads))
    return tokenizer, encoder


def embed_in_process(texts: Sequence[str], max_length: int | None = None) -> np.ndarray:
    """Embeddings computed without Triton, one text at a time (no padding): the reference the service must match."""
    tokenizer, encoder = reference_pipeline(max_length)
    rows = []
    for text in texts:
        batch = tokenizer([text])
        rows.append(load("pooling").mean_pool(encoder.encode(batch.input_ids, batch.attention_mask),
                                              batch.attention_mask)[0])
    return np.stack(rows)


class EmbeddingPipeline:
    """texts -> unit-length [n, 384] float32 for a whole batch; ONNX Runtime uses `threads` intra-op threads.

    The benchmark's ceiling, its FastAPI service and its PyTriton binding all call this, so they compute exactly
    what the `embed` ensemble computes."""

    def __init__(self, threads: int, repository: Path = settings.MODEL_REPOSITORY):
        self.tokenizer, self.encoder = reference_pipeline(None, threads, repository)
        self.mean_pool = load("pooling", repository).mean_pool

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        batch = self.tokenizer(texts)
        return self.mean_pool(self.encoder.encode(batch.input_ids, batch.attention_mask), batch.attention_mask)
