"""Call any model on a running server and present the answer: an embedding model's shape, leading values and cosine
similarity matrix; a decoupled (streaming) model's text piece by piece with its timing; any other model's outputs."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from rich.console import Console
from rich.table import Table
from tritonclient.utils import np_to_triton_dtype

from tools import settings
from tools.errors import UsageError
from tools.serving import client, payloads

# What `tools serve` sends once the server is ready: a paraphrase pair and an unrelated sentence; a streaming model
# gets the first as its prompt and a few tokens to answer with.
SMOKE_TEXTS = ("A man is playing a guitar.", "Someone is strumming a guitar.", "The stock market fell sharply today.")
SMOKE_PARAMETERS: payloads.Parameters = {"max_tokens": 8}
LEADING_VALUES = 4
SHOWN_VALUES = 8  # values of an output shown before eliding the rest
# What the final response of a streaming text model may say beside its text (the names of Triton's LLM backends).
FINAL_FIELDS = ("finish_reason", "prompt_tokens", "completion_tokens")
COMPLETION_TOKENS = "completion_tokens"


@dataclass(frozen=True)
class InferResult:
    """One embedding request and its answer."""

    protocol: client.Protocol
    url: str
    model: str
    texts: tuple[str, ...]
    embeddings: np.ndarray

    @property
    def similarity(self) -> np.ndarray:
        return client.cosine_similarity(self.embeddings)

    def as_json(self) -> dict:
        return {
            "model": self.model, "protocol": str(self.protocol), "url": self.url, "texts": list(self.texts),
            "shape": list(self.embeddings.shape),
            "embeddings": self.embeddings.round(6).tolist(),
            "similarity": self.similarity.round(6).tolist(),
        }


@dataclass(frozen=True)
class StreamResult:
    """One request to a decoupled model: its responses as they came, timed from when it was sent."""

    protocol: client.Protocol
    url: str
    model: str
    prompt: str
    started: float  # time.perf_counter() when the request was sent
    pieces: tuple[client.Piece, ...]

    @property
    def text(self) -> str:
        return "".join(piece.text for piece in self.pieces)

    @property
    def final(self) -> dict[str, object]:
        """What the final response said beyond text (finish reason, token counts), when the model sends it."""
        last = self.pieces[-1].outputs if self.pieces else {}
        return {name: last[name] for name in FINAL_FIELDS if name in last}

    @property
    def ttft_ms(self) -> float | None:
        """Time to the first response carrying text (GenAI-Perf's time to first token)."""
        first = next((piece.at for piece in self.pieces if piece.text), None)
        return None if first is None else (first - self.started) * 1e3

    @property
    def latency_ms(self) -> float:
        return ((self.pieces[-1].at if self.pieces else self.started) - self.started) * 1e3

    @property
    def output_tokens(self) -> int:
        """The model's own count (completion_tokens) when it sends one, else the responses that carried text."""
        counted = self.final.get(COMPLETION_TOKENS)
        return int(counted) if isinstance(counted, int) else sum(1 for piece in self.pieces if piece.text)

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / (self.latency_ms / 1e3) if self.latency_ms > 0 else 0.0

    def summary(self) -> str:
        first = "no text" if self.ttft_ms is None else f"first text after {self.ttft_ms:.1f} ms"
        said = "".join(f", {name} {value}" for name, value in self.final.items())
        return (f"{self.model} over {self.protocol} at {self.url}: {first}, {len(self.pieces)} responses, "
                f"{self.output_tokens} tokens in {self.latency_ms:.1f} ms ({self.tokens_per_s:.1f} tokens/s){said}")

    def as_json(self) -> dict:
        return {"prompt": self.prompt, "text": self.text, "responses": len(self.pieces),
                "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 3),
                "latency_ms": round(self.latency_ms, 3), "output_tokens": self.output_tokens,
                "tokens_per_s": round(self.tokens_per_s, 2), **self.final}


@dataclass(frozen=True)
class OutputsResult:
    """One request to a model that answers once, and every output it answered."""

    protocol: client.Protocol
    url: str
    model: str
    inputs: payloads.Arrays
    outputs: payloads.Arrays

    def as_json(self) -> dict:
        def tensors(arrays: payloads.Arrays) -> dict:
            return {name: {"datatype": np_to_triton_dtype(array.dtype), "shape": list(array.shape),
                           "data": [v.decode(errors="replace") if isinstance(v, bytes) else v
                                    for v in array.ravel().tolist()]} for name, array in arrays.items()}

        return {"inputs": tensors(self.inputs), "outputs": tensors(self.outputs)}


@dataclass
class Call:
    """What to send to a model: texts (or, when none are given, `fallback_texts`), or perf_analyzer input data,
    with request parameters and the dims of variable inputs."""

    model: str
    texts: Sequence[str] = ()
    version: str = ""
    parameters: payloads.Parameters = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    input_data: list[dict] | None = None
    text_input: str | None = None
    fallback_texts: Sequence[str] = SMOKE_TEXTS


def is_embedding(spec: payloads.ModelSpec) -> bool:
    """A model answering the service's embedding output for texts: shown as embeddings and their similarity."""
    return settings.EMBED_OUTPUT in spec.output_names and spec.text_input() is not None


def run(texts: Sequence[str], protocol: client.Protocol, url: str | None = None,
        model: str = settings.EMBED_MODEL, version: str = "") -> InferResult:
    url = url or client.default_url(protocol)
    embeddings = client.embed_texts(texts, protocol, url, model, version)
    return InferResult(protocol, url, model, tuple(texts), embeddings)


def _requests(spec: payloads.ModelSpec, call: Call) -> list[payloads.Arrays]:
    """The requests of one `tools infer`: each input-data request; else one per text for a model that does not batch
    (or streams), all texts in one batch for one that does; without texts, one request of the first fallback text."""
    if call.input_data:
        builder = payloads.RequestBuilder(spec, call.fallback_texts, call.text_input, 1, call.shapes, call.input_data)
        return [builder.request(index) for index in range(len(call.input_data))]
    texts = list(call.texts) or list(call.fallback_texts[:1])
    one_each = not spec.batches or len(texts) == 1
    builder = payloads.RequestBuilder(spec, texts, call.text_input, 1 if one_each else len(texts), call.shapes)
    if builder.text_name is None and call.texts:
        raise UsageError(f"model {spec.name} has no text input (BYTES) to send texts to; its inputs: "
                                f"{', '.join(spec.input_names) or 'none'}")
    return [builder.request(texts=[text]) for text in texts] if one_each else [builder.request(texts=texts)]


def stream(connection, protocol: client.Protocol, url: str, model: str, arrays: payloads.Arrays, version: str = "",
           parameters: payloads.Parameters | None = None, prompt: str = "",
           on_piece: Callable[[client.Piece], None] | None = None) -> StreamResult:
    """One streamed request (gRPC stream, or HTTP's generate_stream), with `stream: true` unless told otherwise."""
    parameters = {"stream": True, **(parameters or {})}
    started = time.perf_counter()
    if protocol == client.Protocol.GRPC:
        grpc_stream = client.GrpcStream(connection)
        try:
            pieces = _collect(grpc_stream.request(model, arrays, version, parameters), on_piece)
        finally:
            grpc_stream.close()
    else:
        pieces = _collect(client.http_stream(url, model, arrays, version, parameters), on_piece)
    return StreamResult(protocol, url, model, prompt, started, tuple(pieces))


def _collect(pieces, on_piece: Callable[[client.Piece], None] | None) -> list[client.Piece]:
    kept = []
    for piece in pieces:
        kept.append(piece)
        if on_piece:
            on_piece(piece)
    return kept


def run_any(call: Call, protocol: client.Protocol, url: str,
            on_piece: Callable[[client.Piece], None] | None = None,
            on_result: Callable[[StreamResult | OutputsResult], None] | None = None,
            ) -> InferResult | list[StreamResult] | list[OutputsResult]:
    """Call the model the way it answers (see the module's docstring); `on_piece` sees each streamed response as it
    arrives, `on_result` each request's result as it completes."""
    connection = client.connect(protocol, url)
    try:
        spec = client.describe(connection, call.model, call.version)
        if is_embedding(spec) and not (call.input_data or call.parameters or call.shapes):
            texts = list(call.texts) or list(call.fallback_texts[:1])
            return InferResult(protocol, url, call.model, tuple(texts),
                               client.embed(connection, texts, call.model, call.version))
        results = []
        for arrays in _requests(spec, call):
            if spec.decoupled:
                text = spec.text_input(call.text_input)
                prompt = " ".join(payloads.texts_of(arrays, text.name if text else None))
                result = stream(connection, protocol, url, call.model, arrays, call.version, call.parameters, prompt,
                                on_piece)
            else:
                result = OutputsResult(protocol, url, call.model, arrays,
                                       client.call(connection, call.model, arrays, call.version, call.parameters))
            if on_result:
                on_result(result)
            results.append(result)
        return results
    finally:
        connection.close()


def as_json(protocol: client.Protocol, url: str, model: str, results: list[StreamResult] | list[OutputsResult]) -> dict:
    return {"model": model, "protocol": str(protocol), "url": url,
            "requests": [result.as_json() for result in results]}


def render(result: InferResult, console: Console) -> None:
    """Human output: the shape, each text with its first values, then the similarity matrix."""
    console.print(f"[bold]{result.model}[/] over {result.protocol} at {result.url}: "
                  f"embeddings {tuple(result.embeddings.shape)} {result.embeddings.dtype}", highlight=False)
    for index, (text, row) in enumerate(zip(result.texts, result.embeddings, strict=True)):
        leading = ", ".join(f"{v:+.4f}" for v in row[:LEADING_VALUES])
        console.print(f"  [{index}] [{leading}, ...]  {_short(text)}", highlight=False, markup=False)
    table = Table(title="cosine similarity", title_justify="left", show_edge=False)
    table.add_column("")
    for index in range(len(result.texts)):
        table.add_column(str(index), justify="right")
    for index, row in enumerate(result.similarity):
        table.add_row(str(index), *(f"{value:.3f}" for value in row))
    console.print(table)


def summarise(array: np.ndarray) -> str:
    """An output's values in one line: the first few, and for longer numeric ones their range and mean."""
    flat = array.ravel()
    values = [_short(v.decode(errors="replace"), 40) if isinstance(v, bytes) else v for v in flat[:SHOWN_VALUES]]
    shown = ", ".join(repr(v) if isinstance(v, str) else f"{v:g}" if isinstance(v, float) else str(v)
                      for v in (x.item() if isinstance(x, np.generic) else x for x in values))
    if flat.size <= SHOWN_VALUES:
        return f"[{shown}]"
    more = f"[{shown}, ...]"
    if np.issubdtype(array.dtype, np.number):
        more += f"  min {flat.min():g}  max {flat.max():g}  mean {flat.astype(np.float64).mean():g}"
    return more


def render_outputs(result: OutputsResult, console: Console) -> None:
    """Human output of one request: what was sent, then each output's name, dtype, shape and values."""
    sent = ", ".join(f"{name} {np_to_triton_dtype(a.dtype)} {list(a.shape)}" for name, a in result.inputs.items())
    console.print(f"[bold]{result.model}[/] over {result.protocol} at {result.url} ({sent}):", highlight=False)
    for name, array in result.outputs.items():
        console.print(f"  {name} {np_to_triton_dtype(array.dtype)} {list(array.shape)}: {summarise(array)}",
                      highlight=False, markup=False)


def smoke(http_url: str, grpc_url: str, console: Console, models: Sequence[str] | None = None) -> list:
    """Call each model (default: the embedding ensemble) over both protocols and print the answers. Embeddings must
    agree across protocols; a streaming model must stream over both; any other model must answer over both."""
    results: list = []
    for model in models or (settings.EMBED_MODEL,):
        connection = client.connect(client.Protocol.HTTP, http_url)
        try:
            spec = client.describe(connection, model)
        finally:
            connection.close()
        if is_embedding(spec):
            pair = [run(SMOKE_TEXTS, client.Protocol.HTTP, http_url, model),
                    run(SMOKE_TEXTS, client.Protocol.GRPC, grpc_url, model)]
            for result in pair:
                render(result, console)
            gap = float(np.abs(pair[0].embeddings - pair[1].embeddings).max())
            if gap > 1e-5:
                raise client.EmbeddingError(f"{model}: HTTP and gRPC answers differ by {gap:.2e}")
            results += pair
            continue
        call = Call(model, parameters=dict(SMOKE_PARAMETERS) if spec.decoupled else {})
        for protocol, url in ((client.Protocol.HTTP, http_url), (client.Protocol.GRPC, grpc_url)):
            for result in run_any(call, protocol, url):
                if isinstance(result, StreamResult):
                    console.print(f"{_short(result.prompt)} -> {result.text!r}", highlight=False, markup=False)
                    console.print(result.summary(), highlight=False, markup=False)
                else:
                    render_outputs(result, console)
                results.append(result)
    return results


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
