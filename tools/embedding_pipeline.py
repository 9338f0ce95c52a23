"""The embedding pipeline called in-process: the repository's own tokenizer, ONNX encoder and pooling code
(through `tools.model_logic`), composed for a whole batch. The benchmark's ceiling, its FastAPI service and its
PyTriton binding all call this, so they compute exactly what the `embed` ensemble computes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tools import model_logic


class EmbeddingPipeline:
    """texts -> unit-length [n, 384] float32; ONNX Runtime uses `threads` intra-op threads."""

    def __init__(self, threads: int):
        self.tokenizer, self.encoder = model_logic.reference_pipeline(None, threads)
        self.mean_pool = model_logic.load("pooling").mean_pool

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        batch = self.tokenizer(texts)
        return self.mean_pool(self.encoder.encode(batch.input_ids, batch.attention_mask), batch.attention_mask)
