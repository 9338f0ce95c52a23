"""Token embeddings -> sentence embeddings: masked mean pooling, then L2 normalisation (as all-MiniLM-L6-v2 is trained).

Plain Python (no Triton): the encoder glue (triton_encoder.py) and the unit tests call it.
"""

from __future__ import annotations

import numpy as np

# Guards the divisions for a sequence without tokens (e.g. zero-filled warm-up data): it pools to zeros.
EPSILON = 1e-12


def mean_pool(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """[batch, seq, dim] and [batch, seq] -> unit-length [batch, dim] float32 (padding ignored)."""
    if hidden.ndim != 3 or attention_mask.shape != hidden.shape[:2]:
        raise ValueError(f"token embeddings {list(hidden.shape)} and attention_mask {list(attention_mask.shape)} "
                         "must be [batch, sequence, dim] and [batch, sequence]")
    mask = attention_mask.astype(np.float32)[:, :, None]
    summed = (hidden.astype(np.float32) * mask).sum(axis=1)
    mean = summed / np.maximum(mask.sum(axis=1), EPSILON)
    norms = np.linalg.norm(mean, axis=1, keepdims=True)
    return (mean / np.maximum(norms, EPSILON)).astype(np.float32)
