"""The canary: the same real requests to the new version and to the serving one, compared side by side.

Texts come from the project's corpus (its shortest queries and longest passages). A composing model that does not
take text gets its inputs the way the ensemble makes them: the steps before it run on the server first, and their
outputs are what both versions receive. Requests alternate between the versions, so noise hits both alike.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tools.errors import ServingError
from tools.loadtest import corpus
from tools.rollout.policy import ensemble_steps
from tools.serving.control import Control

SHORT_TEXTS = 8
LONG_TEXTS = 4
DEFAULT_MIN_COSINE = 0.99
DEFAULT_MAX_LATENCY_RATIO = 2.0  # median new / median old; generous, the machine is shared and noisy
REQUEST_TIMEOUT_S = 30.0

Tensors = dict[str, np.ndarray]


@dataclass
class CanaryResult:
    """What the canary saw: `problems` empty means the new version may take the traffic."""

    requests: int = 0
    failed_requests: int = 0
    min_cosine: float | None = None
    old_median_ms: float = 0.0
    new_median_ms: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def latency_ratio(self) -> float:
        return self.new_median_ms / self.old_median_ms if self.old_median_ms else float("inf")

    def as_dict(self) -> dict:
        return {**asdict(self), "latency_ratio": self.latency_ratio}


def canary_texts(path=corpus.DEFAULT_CORPUS, short: int = SHORT_TEXTS, long: int = LONG_TEXTS) -> list[str]:
    """A fixed set: the corpus's `short` shortest texts (queries) and `long` longest (passages past 128 tokens)."""
    texts = sorted(set(corpus.load(path)), key=lambda text: (len(text), text))
    return texts[:short] + texts[-long:]


CALL_ERRORS = (InferenceServerException, OSError)  # Triton's refusal, or no answer


def _message(exc: Exception) -> str:
    """Triton's message on one line (a Python model's traceback is cut at its "At:" part)."""
    text = exc.message() if isinstance(exc, InferenceServerException) else str(exc)
    return " ".join(text.split("\nAt:", 1)[0].split())


def _datatype(config_type: str) -> str:
    name = config_type.removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def _infer(connection, model: str, version: int | str, inputs: Tensors, types: dict[str, str],
           outputs: list[str] | None = None) -> Tensors:
    """One request; `outputs` names the outputs to ask for (None: all of them)."""
    tensors = []
    for name, array in inputs.items():
        tensor = httpclient.InferInput(name, list(array.shape), types[name])
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    requested = [httpclient.InferRequestedOutput(name) for name in outputs] if outputs else None
    result = connection.infer(model, tensors, model_version=str(version), outputs=requested)
    return {output["name"]: result.as_numpy(output["name"]) for output in result.get_response()["outputs"]}


@dataclass
class _Feeder:
    """Turns one text into the inputs of the target model: directly, or through the ensemble's earlier steps."""

    text_tensor: str  # where the text goes: the target's own input, or the ensemble's
    steps: list[dict]  # the ensemble's steps before the target's, in an order that runs
    target_map: dict[str, str] | None  # the target step's input_map (None: the target takes the text itself)
    types: dict[str, dict[str, str]]  # model -> input name -> datatype
    # The target's outputs the ensemble uses: what both versions must agree on (None: all of them). Others may
    # differ where nothing reads them, e.g. token embeddings at padded positions.
    target_outputs: list[str] | None = None

    def inputs(self, connection, text: str) -> Tensors:
        tensors: Tensors = {self.text_tensor: np.array([[text.encode()]], dtype=np.object_)}
        for step in self.steps:
            inputs = {name: tensors[source] for name, source in step["input_map"].items()}
            outputs = _infer(connection, step["model_name"], "", inputs, self.types[step["model_name"]])
            tensors.update({step["output_map"][name]: value for name, value in outputs.items()
                            if name in step["output_map"]})
        if self.target_map is None:
            return tensors
        return {name: tensors[source] for name, source in self.target_map.items()}


def _feeder(control: Control, model: str, ensembles: dict[str, dict]) -> _Feeder:
    """How to make the target's inputs from text; ServingError when neither it nor an ensemble takes text."""
    def input_types(name: str) -> dict[str, str]:
        return {tensor["name"]: _datatype(tensor["data_type"]) for tensor in control.config(name).get("input", [])}

    own = input_types(model)
    if len(own) == 1 and "BYTES" in own.values():
        return _Feeder(next(iter(own)), [], None, {model: own})
    for config in ensembles.values():
        inputs = config.get("input", [])
        if len(inputs) != 1 or inputs[0]["data_type"] != "TYPE_STRING":
            continue
        target_steps = ensemble_steps(config, model)
        target_map = target_steps[0]["input_map"]
        available, pending, ordered = {inputs[0]["name"]}, list(config["ensemble_scheduling"]["step"]), []
        while not set(target_map.values()) <= available:
            runnable = [s for s in pending if s["model_name"] != model and set(s["input_map"].values()) <= available]
            if not runnable:
                break
            for step in runnable:
                pending.remove(step)
                ordered.append(step)
                available |= set(step["output_map"].values())
        if set(target_map.values()) <= available:
            types = {step["model_name"]: input_types(step["model_name"]) for step in ordered}
            used = sorted({name for step in target_steps for name in step["output_map"]})
            return _Feeder(inputs[0]["name"], ordered, target_map, {**types, model: own}, used)
    raise ServingError(f"no canary requests for {model}: it takes no text and no text ensemble feeds it")


def _compare(old: Tensors, new: Tensors, where: str, result: CanaryResult) -> None:
    if old.keys() != new.keys():
        result.problems.append(f"{where}: outputs {sorted(new)} instead of {sorted(old)}")
        return
    for name in old:
        a, b = old[name], new[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            result.problems.append(f"{where}: {name} is {b.dtype}{list(b.shape)} instead of {a.dtype}{list(a.shape)}")
        elif np.issubdtype(a.dtype, np.floating):
            x, y = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
            norms = np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-12)
            cosine = float(np.min(np.sum(x * y, axis=1) / norms))
            result.min_cosine = cosine if result.min_cosine is None else min(result.min_cosine, cosine)
        elif not np.array_equal(a, b):
            result.problems.append(f"{where}: {name} differs")


def run_canary(control: Control, model: str, old: int, new: int, ensembles: dict[str, dict], texts: list[str],
               min_cosine: float = DEFAULT_MIN_COSINE, max_latency_ratio: float = DEFAULT_MAX_LATENCY_RATIO,
               on_request: Callable[[int, int], None] | None = None) -> CanaryResult:
    """Send every text to version `new` and to `old` of `model` (alternating which goes first) and compare."""
    feeder = _feeder(control, model, ensembles)
    result = CanaryResult()
    timings: dict[int, list[float]] = {old: [], new: []}
    connection = httpclient.InferenceServerClient(control.url, connection_timeout=REQUEST_TIMEOUT_S,
                                                  network_timeout=REQUEST_TIMEOUT_S)
    with contextlib.closing(connection):
        for index, text in enumerate(texts):
            where = f"text {index + 1} ({len(text.split())} words)"
            try:
                inputs = feeder.inputs(connection, text)
            except CALL_ERRORS as exc:
                raise ServingError(f"the steps before {model} failed on {where}: {_message(exc)}") from None
            answers: dict[int, Tensors] = {}
            for version in ((old, new) if index % 2 else (new, old)):
                result.requests += 1
                started = time.perf_counter()
                try:
                    answers[version] = _infer(connection, model, version, inputs, feeder.types[model],
                                              feeder.target_outputs)
                except CALL_ERRORS as exc:
                    result.failed_requests += 1
                    result.problems.append(f"{where}: version {version} failed: {_message(exc)}")
                    continue
                timings[version].append(time.perf_counter() - started)
            if len(answers) == 2:
                _compare(answers[old], answers[new], where, result)
            if on_request:
                on_request(index + 1, len(texts))
    if timings[old] and timings[new]:
        result.old_median_ms = statistics.median(timings[old]) * 1000
        result.new_median_ms = statistics.median(timings[new]) * 1000
        if result.latency_ratio > max_latency_ratio:
            result.problems.append(f"median latency {result.new_median_ms:.1f} ms is {result.latency_ratio:.2f}x the "
                                   f"serving version's {result.old_median_ms:.1f} ms (limit {max_latency_ratio}x)")
    if result.min_cosine is not None and result.min_cosine < min_cosine:
        result.problems.append(f"cosine similarity down to {result.min_cosine:.4f} (threshold {min_cosine})")
    return result
