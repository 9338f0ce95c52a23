"""Requests for any model, built from what the server says of it (its configuration): texts for the input that takes
them, generated data of the declared dtype and shape for other required inputs, or perf_analyzer's `--input-data`
JSON; plus typed request parameters. `tools infer` and `tools loadtest` build every request here.

perf_analyzer's JSON: {"data": [{INPUT: value, ...}, ...]}, one object per request (a list of such lists, its
sequence streams, is read flattened); a value is a flat row-major list, {"content": [...], "shape": [...]}, or
{"b64": "..."} (the tensor's raw bytes: little-endian numbers, or Triton's length-prefixed BYTES serialisation).
A tensor in the file is one batch row; optional inputs it names are sent, required ones it leaves out are generated.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tritonclient.utils import (
    TRITON_RESERVED_REQUEST_PARAMS,
    TRITON_RESERVED_REQUEST_PARAMS_PREFIX,
    deserialize_bytes_tensor,
    triton_to_np_dtype,
)

from tools.errors import UsageError

Arrays = dict[str, np.ndarray]
Parameters = dict[str, bool | int | float | str]
TEXT_TYPE = "BYTES"
GENERATED_INT_RANGE = (0, 100)  # small non-negative ints: valid ids for any vocabulary, no overflow in sums


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as the model's configuration declares it (dims without the batch dimension)."""

    name: str
    datatype: str  # Triton's wire name: FP32, INT64, BYTES, ...
    dims: tuple[int, ...]
    optional: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """What a request to the model must look like, and whether it answers as a stream (decoupled)."""

    name: str
    version: str
    max_batch_size: int
    decoupled: bool
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def batches(self) -> bool:
        return self.max_batch_size > 0

    def input(self, name: str) -> TensorSpec:
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        raise UsageError(f"model {self.name} has no input {name!r} (inputs: {', '.join(self.input_names)})")

    @property
    def input_names(self) -> list[str]:
        return [tensor.name for tensor in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [tensor.name for tensor in self.outputs]

    def text_input(self, chosen: str | None = None) -> TensorSpec | None:
        """The input that takes texts: `chosen`, else the first required BYTES input, else the first BYTES one."""
        if chosen:
            tensor = self.input(chosen)
            if tensor.datatype != TEXT_TYPE:
                raise UsageError(f"input {chosen!r} of model {self.name} is {tensor.datatype}, not text ({TEXT_TYPE})")
            return tensor
        texts = [tensor for tensor in self.inputs if tensor.datatype == TEXT_TYPE]
        return next((tensor for tensor in texts if not tensor.optional), texts[0] if texts else None)


def _wire_type(config_type: str) -> str:
    name = config_type.removeprefix("TYPE_")
    return TEXT_TYPE if name == "STRING" else name


def _tensors(entries: Iterable[dict]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(entry["name"], _wire_type(entry["data_type"]), tuple(int(d) for d in entry.get("dims", ())),
                            bool(entry.get("optional", False))) for entry in entries)


def spec_from_config(config: dict, version: str = "") -> ModelSpec:
    """A ModelSpec from Triton's model configuration as JSON (HTTP's answer, or gRPC's with as_json=True)."""
    config = config.get("config", config)  # gRPC wraps it
    return ModelSpec(name=config["name"], version=version, max_batch_size=int(config.get("max_batch_size", 0)),
                     decoupled=bool(config.get("model_transaction_policy", {}).get("decoupled", False)),
                     inputs=_tensors(config.get("input", [])), outputs=_tensors(config.get("output", [])))


# -- what users type ------------------------------------------------------------------------------------------------
def parse_params(terms: Sequence[str]) -> Parameters:
    """`--param key=value` terms -> request parameters, typed as JSON reads the value (16 -> int, 0.5 -> float,
    true -> bool, anything else a string; a JSON list or object is sent as its text, e.g. stop=["\\n"])."""
    parameters: Parameters = {}
    for term in terms:
        key, sep, text = term.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"invalid --param {term!r}: use key=value, e.g. max_tokens=16")
        if key in TRITON_RESERVED_REQUEST_PARAMS or key.startswith(TRITON_RESERVED_REQUEST_PARAMS_PREFIX):
            raise UsageError(f"--param {key!r} is reserved by Triton's protocol")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        if value is None:
            raise UsageError(f"invalid --param {term!r}: a parameter is a number, true/false or a string")
        parameters[key] = text if isinstance(value, list | dict) else value
    return parameters


def parse_shapes(terms: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """`--input-shape name:d1,d2` terms (perf_analyzer's --shape; dims without the batch dimension) -> {name: dims}."""
    shapes = {}
    for term in terms:
        name, sep, dims = term.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 0:
            raise UsageError(f"invalid --input-shape {term!r}: use name:d1,d2 (non-negative dims, no batch dimension)")
        shapes[name] = shape
    return shapes


def read_input_data(path: Path) -> list[dict]:
    """The request objects of a perf_analyzer input-data file, not yet checked against a model."""
    try:
        document = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"cannot read --input-data {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"--input-data {path} is not JSON: {exc}") from None
    entries = document.get("data") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"--input-data {path} has no \"data\" list of requests (perf_analyzer's format)")
    flat = [entry for item in entries for entry in (item if isinstance(item, list) else [item])]
    if not all(isinstance(entry, dict) for entry in flat):
        raise UsageError(f"--input-data {path}: each request in \"data\" is an object of input name -> value")
    return flat


# -- building requests ---------------------------------------------------------------------------------------------
def _dims(spec: TensorSpec, shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    """The declared dims with each variable (-1) dimension set by --input-shape, else 1 (perf_analyzer requires it)."""
    if spec.name in shapes:
        given = shapes[spec.name]
        if len(given) != len(spec.dims) or any(d not in (-1, g) for d, g in zip(spec.dims, given, strict=True)):
            raise UsageError(f"--input-shape {spec.name}:{','.join(map(str, given))} does not fit its declared dims "
                             f"{list(spec.dims)}")
        return given
    return tuple(1 if d < 0 else d for d in spec.dims)


def generate(spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator, texts: Sequence[str]) -> np.ndarray:
    """Random data of the tensor's dtype: texts from `texts` for BYTES, small ints, floats in [0, 1), booleans."""
    if spec.datatype == TEXT_TYPE:
        picks = [texts[int(i)].encode() for i in rng.integers(0, len(texts), int(np.prod(shape)))]
        return np.array(picks, dtype=np.object_).reshape(shape)
    dtype = triton_to_np_dtype(spec.datatype)
    if dtype is None:
        raise UsageError(f"input {spec.name}: cannot generate data of type {spec.datatype}; give it in --input-data")
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(*GENERATED_INT_RANGE, shape).astype(dtype)
    return rng.random(shape).astype(dtype)


def _from_file(spec: TensorSpec, value: object, shapes: dict[str, tuple[int, ...]], where: str) -> np.ndarray:
    """One tensor of an input-data request, as one batch row of the declared dtype."""
    dtype = np.object_ if spec.datatype == TEXT_TYPE else triton_to_np_dtype(spec.datatype)
    shape = None
    try:
        if isinstance(value, dict) and "b64" in value:
            raw = base64.b64decode(value["b64"], validate=True)
            flat = deserialize_bytes_tensor(raw) if spec.datatype == TEXT_TYPE else np.frombuffer(raw, dtype=dtype)
        elif isinstance(value, dict) and "content" in value:
            flat, shape = value["content"], value.get("shape")
        else:
            flat = value
        if spec.datatype == TEXT_TYPE:
            data = np.array([v if isinstance(v, bytes) else str(v).encode() for v in np.ravel(flat)], dtype=np.object_)
        else:
            data = np.array(flat, dtype=dtype).ravel()
        if shape is None:  # numpy infers one variable dimension from the count
            shape = _dims(spec, shapes) if spec.name in shapes else spec.dims
        return data.reshape(shape)
    except (TypeError, ValueError, struct.error) as exc:  # bad base64 is a ValueError too
        raise UsageError(f"{where}: input {spec.name} ({spec.datatype}, dims {list(spec.dims)}): {exc}") from None


@dataclass
class RequestBuilder:
    """Makes the inputs of request after request for one model.

    Texts (given, or a corpus) go to the text input, `batch` per request for a batching model; other required inputs
    get generated data; optional inputs are sent only when the input-data file names them. With input data, request
    i is the file's request i (cycling) and generated data fills only what it leaves out."""

    spec: ModelSpec
    texts: Sequence[str]
    text_input: str | None = None
    batch: int = 1
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    input_data: list[dict] | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise UsageError("the batch (texts per request) must be at least 1")
        if not self.spec.batches and self.batch > 1:
            raise UsageError(f"model {self.spec.name} does not batch (max_batch_size 0): send one text per request")
        for name in self.shapes:
            self.spec.input(name)
        self._text = self.spec.text_input(self.text_input)
        if not self.texts and not self.input_data and any(tensor.datatype == TEXT_TYPE and not tensor.optional
                                                          for tensor in self.spec.inputs):
            raise UsageError(f"model {self.spec.name} needs texts and none were given")
        self._rng = np.random.default_rng(self.seed)
        self._data = [self._convert(entry, index) for index, entry in enumerate(self.input_data or [])]
        self._next_text = 0

    def _convert(self, entry: dict, index: int) -> Arrays:
        where = f"input data request {index}"
        unknown = set(entry) - set(self.spec.input_names)
        if unknown:
            raise UsageError(f"{where} names no input of model {self.spec.name}: {', '.join(sorted(unknown))} "
                             f"(inputs: {', '.join(self.spec.input_names)})")
        return {name: _from_file(self.spec.input(name), value, self.shapes, where) for name, value in entry.items()}

    @property
    def text_name(self) -> str | None:
        return None if self._text is None else self._text.name

    def take_texts(self, count: int) -> list[str]:
        """The next `count` texts, in order, cycling."""
        picks = [self.texts[(self._next_text + i) % len(self.texts)] for i in range(count)]
        self._next_text = (self._next_text + count) % len(self.texts)
        return picks

    def request(self, index: int = 0, texts: Sequence[str] | None = None) -> Arrays:
        """The inputs of request `index`: `texts` (default: the next ones) for the text input."""
        rows, arrays = self.batch, {}
        if self._data:
            rows, arrays = 1, dict(self._data[index % len(self._data)])
            if self.spec.batches:
                arrays = {name: array[np.newaxis] for name, array in arrays.items()}
        elif self._text is not None and self.texts:
            chosen = list(texts) if texts is not None else self.take_texts(self.batch)
            rows, shape = len(chosen), _dims(self._text, self.shapes)
            if int(np.prod(shape)) != 1:
                raise UsageError(f"text input {self._text.name} takes {list(shape)} texts per row; send it in "
                                 "--input-data")
            lead = (rows,) if self.spec.batches else ()
            arrays[self._text.name] = np.array([t.encode() for t in chosen], dtype=np.object_).reshape(*lead, *shape)
        lead = (rows,) if self.spec.batches else ()
        for tensor in self.spec.inputs:
            if tensor.name not in arrays and not tensor.optional:
                arrays[tensor.name] = generate(tensor, (*lead, *_dims(tensor, self.shapes)), self._rng, self.texts)
        return arrays


def texts_of(arrays: Arrays, name: str | None) -> list[str]:
    """The texts a request carries in its text input (for showing a prompt beside its answer)."""
    if name is None or name not in arrays:
        return []
    return [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in arrays[name].ravel()]



def answer_problem(spec: ModelSpec, arrays: Arrays, outputs: Arrays) -> str | None:
    """What is wrong with a (not streamed) answer, if anything: a declared output missing, or for a batching model an
    output whose rows are not the request's."""
    missing = [name for name in spec.output_names if name not in outputs]
    if missing:
        return f"{spec.name} answered without {', '.join(missing)}"
    rows = next(iter(arrays.values())).shape[0] if spec.batches and arrays else None
    short = {name: list(array.shape) for name, array in outputs.items() if rows is not None and
             (array.ndim == 0 or array.shape[0] != rows)}
    if short:
        return f"{spec.name} answered {short} for {rows} rows"
    return None
