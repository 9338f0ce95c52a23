"""Client helpers: connect over HTTP or gRPC (sync or asyncio), read what a model takes, call any model (streamed
answers of decoupled models too), embed texts and compare them.

Other commands (infer, serve's smoke request, load tests, benchmarks) reuse these instead of building
tritonclient requests themselves.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import queue
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.client import HTTPException

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from geventhttpclient.response import HTTPConnectionClosed
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from tools import settings
from tools.errors import ServingError, UsageError
from tools.serving import payloads
from tools.settings import Protocol

Text = str | bytes
GRPC_CLIENTS = (grpcclient.InferenceServerClient, grpcaio.InferenceServerClient)


class EmbeddingError(ServingError):
    """The server refused a request or could not be reached; `status` is Triton's (e.g. '400', 'StatusCode...')."""

    def __init__(self, message: str, status: str | None = None):
        super().__init__(message)
        self.status = status


def default_url(protocol: Protocol) -> str:
    port = settings.DEFAULT_HTTP_PORT if protocol == Protocol.HTTP else settings.DEFAULT_GRPC_PORT
    return f"{settings.DEFAULT_HOST}:{port}"


def resolve(url: str | None, protocol: Protocol | None = None) -> tuple[Protocol, str]:
    """(protocol, host:port) from what a user typed: `host:port`, `http://host:port` or `grpc://host:port`.

    A scheme chooses the protocol; without one the protocol is `protocol`, else the project's default, and a missing
    URL is the local server's default port for it. A scheme that contradicts `protocol` is a usage error.
    """
    scheme, sep, address = (url or "").partition("://")
    if not sep:
        scheme, address = "", url or ""
    if scheme:
        try:
            from_scheme = Protocol(scheme.lower())
        except ValueError:
            raise UsageError(f"URL {url!r}: unknown scheme {scheme!r}; use http:// or grpc:// (or host:port)") from None
        if protocol is not None and protocol != from_scheme:
            raise UsageError(f"URL {url!r} is {from_scheme} but --protocol is {protocol}")
        protocol = from_scheme
    protocol = protocol or settings.DEFAULT_PROTOCOL
    address = address.rstrip("/") or default_url(protocol)
    try:
        parts = urllib.parse.urlsplit(f"//{address}")
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"URL {url!r}: {exc}; use host:port, http://host:port or grpc://host:port") from None
    if not parts.hostname or port is None or parts.path:
        raise UsageError(f"URL {url!r} is not host:port; use host:port, http://host:port or grpc://host:port")
    return protocol, address


def connect(protocol: Protocol, url: str | None = None, aio: bool = False):
    """A tritonclient InferenceServerClient for the protocol (asyncio flavour with aio=True)."""
    url = url or default_url(protocol)
    if protocol == Protocol.HTTP:
        return (httpaio if aio else httpclient).InferenceServerClient(url)
    return (grpcaio if aio else grpcclient).InferenceServerClient(url)


def model_ready(url: str, model: str, timeout: float = 2.0) -> bool:
    """Whether the server at host:port answers over HTTP that `model` is ready; False while it cannot be reached."""
    try:
        connection = httpclient.InferenceServerClient(url, connection_timeout=timeout, network_timeout=timeout)
        with contextlib.closing(connection):
            return connection.is_model_ready(model)
    except (InferenceServerException, OSError):
        return False


def text_input(client, texts: Sequence[Text], name: str = settings.EMBED_INPUT):
    """A BYTES input of shape [n, 1] (one text per batch row), in the client's protocol."""
    module = grpcclient if isinstance(client, GRPC_CLIENTS) else httpclient
    data = np.array(list(texts), dtype=np.object_).reshape(-1, 1)
    tensor = module.InferInput(name, list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return tensor


# What a call can fail with short of an answer: Triton's refusal, no connection, or something that is not a Triton
# server on the other end (an HTTP client talking to a gRPC port reads an unparseable answer).
CALL_ERRORS = (InferenceServerException, OSError, HTTPException)
# Triton's words when a queue policy sheds a request (core r24.10: scheduler_utils.cc, dynamic_batch_scheduler.cc).
# Over gRPC they come as UNAVAILABLE, the code gRPC also gives a server it cannot reach: these words tell them apart.
QUEUE_REFUSALS = ("Exceeds maximum queue size", "Request timeout expired")


def _error(exc: Exception, where: str = "") -> EmbeddingError:
    if isinstance(exc, InferenceServerException):
        status = None if exc.status() is None else str(exc.status())
        if status != "StatusCode.UNAVAILABLE" or any(words in exc.message() for words in QUEUE_REFUSALS):
            return EmbeddingError(exc.message(), status)
    at = f" at {where}" if where else ""
    if isinstance(exc, HTTPConnectionClosed):  # e.g. the server died or stopped with the request in flight
        return EmbeddingError(f"the server{at} closed the connection without an answer ({exc}); is it stopping, or "
                              "not Triton's HTTP port?")
    if isinstance(exc, HTTPException):
        return EmbeddingError(f"the server{at} does not answer as Triton's HTTP endpoint does ({exc}); is it the "
                              "gRPC port?")
    return EmbeddingError(f"cannot reach the server{at} ({exc})")


def describe(connection, model: str, version: str = "") -> payloads.ModelSpec:
    """What the model takes and answers, from its configuration on the server."""
    try:
        if isinstance(connection, GRPC_CLIENTS):
            config = connection.get_model_config(model, version, as_json=True)
        else:
            config = connection.get_model_config(model, version)
    except CALL_ERRORS as exc:
        raise _error(exc) from None
    return payloads.spec_from_config(config, version)


def infer_inputs(connection, arrays: payloads.Arrays) -> list:
    """tritonclient InferInputs of the client's protocol for named numpy arrays."""
    module = grpcclient if isinstance(connection, GRPC_CLIENTS) else httpclient
    inputs = []
    for name, array in arrays.items():
        tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _output_names(result) -> list[str]:
    response = result.get_response()
    outputs = response["outputs"] if isinstance(response, dict) else response.outputs
    return [output["name"] if isinstance(output, dict) else output.name for output in outputs]


def never_answered(exc: Exception) -> bool:
    """Whether a request met a connection that was refused or closed with no answer (gRPC: UNAVAILABLE in other
    words than a queue refusal). A stopping Triton finishes the requests it took, keeps serving its open connections
    until --exit-timeout-secs, then closes them: a request sent at that moment never ran, and behind a Kubernetes
    Service a new connection reaches a pod that is still serving."""
    if isinstance(exc, InferenceServerException):
        return str(exc.status()) == "StatusCode.UNAVAILABLE" and not any(words in exc.message()
                                                                          for words in QUEUE_REFUSALS)
    return isinstance(exc, HTTPConnectionClosed | ConnectionError)


def call(connection, model: str, arrays: payloads.Arrays, version: str = "",
         parameters: payloads.Parameters | None = None,
         on_resend: Callable[[Exception], None] | None = None) -> payloads.Arrays:
    """Every output of one request to a (not decoupled) model, by name. A request that was `never_answered` is sent
    once more on a new connection (inference has no side effects), and `on_resend` is told."""
    inputs = infer_inputs(connection, arrays)
    for attempt in range(2):
        try:
            result = connection.infer(model, inputs, model_version=version, parameters=parameters or None)
            break
        except CALL_ERRORS as exc:
            if attempt or not never_answered(exc):
                raise _error(exc) from None
            if on_resend is not None:
                on_resend(exc)
    return {name: result.as_numpy(name) for name in _output_names(result)}


@dataclass(frozen=True)
class Piece:
    """One response of a decoupled model: its outputs (a one-element tensor as a plain value, bytes decoded), when it
    arrived (time.perf_counter()), and whether it is the request's last."""

    outputs: dict[str, object]
    at: float
    final: bool

    @property
    def text(self) -> str:
        value = self.outputs.get(settings.GENERATE_OUTPUT, "")
        return value if isinstance(value, str) else ""


def _plain(array: np.ndarray) -> object:
    values = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in array.ravel().tolist()]
    return values[0] if len(values) == 1 else values


def _stream_error(exc: InferenceServerException) -> EmbeddingError:
    """An error a stream delivered: a model's refusal comes without a status, so Triton's queue words name one."""
    if exc.status() is None and any(words in exc.message() for words in QUEUE_REFUSALS):
        return EmbeddingError(exc.message(), "StatusCode.UNAVAILABLE")
    return _error(exc)


class GrpcStream:
    """A gRPC client's bidirectional stream carrying one request at a time: `request` sends one and yields its
    responses up to the final one. A stream the connection broke is started again for the next request."""

    def __init__(self, connection: grpcclient.InferenceServerClient, timeout: float = 300.0):
        self.connection, self.timeout = connection, timeout
        self._answers: queue.Queue = queue.Queue()
        self._ids = itertools.count()
        self._open = False

    def _put(self, result, error) -> None:
        self._answers.put((time.perf_counter(), result, error))

    def _start(self) -> None:
        if not self._open:
            self._answers = queue.Queue()
            try:
                self.connection.start_stream(callback=self._put)
            except CALL_ERRORS as exc:
                raise _error(exc) from None
            self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            self.connection.stop_stream(cancel_requests=True)

    def request(self, model: str, arrays: payloads.Arrays, version: str = "",
                parameters: payloads.Parameters | None = None) -> Iterator[Piece]:
        self._start()
        request_id = str(next(self._ids))
        try:
            self.connection.async_stream_infer(model, infer_inputs(self.connection, arrays), model_version=version,
                                               request_id=request_id, parameters=parameters or None,
                                               enable_empty_final_response=True)
        except CALL_ERRORS as exc:
            self.close()
            raise _error(exc) from None
        while True:
            try:
                at, result, error = self._answers.get(timeout=self.timeout)
            except queue.Empty:
                self.close()
                raise EmbeddingError(f"{model} sent nothing for {self.timeout:g} s") from None
            if error is not None:
                if error.status() is not None:  # the stream itself failed, not the model
                    self.close()
                raise _stream_error(error)
            response = result.get_response()
            if response.id != request_id:  # a late answer of an abandoned request
                continue
            final = response.parameters["triton_final_response"].bool_param
            yield Piece({output.name: _plain(result.as_numpy(output.name)) for output in response.outputs}, at, final)
            if final:
                return


def http_stream(address: str, model: str, arrays: payloads.Arrays, version: str = "",
                parameters: payloads.Parameters | None = None, timeout: float = 300.0) -> Iterator[Piece]:
    """The responses of a decoupled model through Triton's HTTP `generate_stream` endpoint (server-sent events);
    the stream's last event is the final response."""
    path = f"/v2/models/{model}{f'/versions/{version}' if version else ''}/generate_stream"
    body = {name: _plain(array) for name, array in arrays.items()}
    if parameters:
        body["parameters"] = parameters
    connection = http.client.HTTPConnection(address, timeout=timeout)
    try:
        try:
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
        except (OSError, HTTPException) as exc:
            raise EmbeddingError(f"cannot reach the server at {address} ({exc})") from None
        pending = None
        for line in response:
            if not line.startswith(b"data:"):
                if response.status != 200 and line.strip().startswith(b"{"):  # a plain JSON error, not an event
                    raise EmbeddingError(json.loads(line).get("error", line.decode()), str(response.status))
                continue
            event = json.loads(line[5:])
            if "error" in event:
                raise EmbeddingError(event["error"], str(response.status))
            if pending is not None:
                yield pending
            outputs = {k: v for k, v in event.items() if k not in ("model_name", "model_version", "id")}
            pending = Piece(outputs, time.perf_counter(), final=False)
        if response.status != 200:
            raise EmbeddingError(f"{model}: HTTP {response.status} {response.reason}", str(response.status))
        if pending is not None:
            yield Piece(pending.outputs, pending.at, final=True)
    finally:
        connection.close()


def _embeddings(result, model: str) -> np.ndarray:
    embeddings = result.as_numpy(settings.EMBED_OUTPUT)
    if embeddings is None:
        raise EmbeddingError(f"{model} answered without an {settings.EMBED_OUTPUT} output: is it an embedding model?")
    return embeddings


def embed(client, texts: Sequence[Text], model: str = settings.EMBED_MODEL, version: str = "") -> np.ndarray:
    """Embeddings [len(texts), dim] float32 from a synchronous client."""
    try:
        result = client.infer(model, [text_input(client, texts)], model_version=version)
    except CALL_ERRORS as exc:
        raise _error(exc) from None
    return _embeddings(result, model)


async def embed_async(client, texts: Sequence[Text], model: str = settings.EMBED_MODEL,
                      version: str = "") -> np.ndarray:
    """Embeddings [len(texts), dim] float32 from an asyncio client."""
    try:
        result = await client.infer(model, [text_input(client, texts)], model_version=version)
    except CALL_ERRORS as exc:
        raise _error(exc) from None
    return _embeddings(result, model)


def embed_texts(texts: Sequence[Text], protocol: Protocol, url: str | None = None,
                model: str = settings.EMBED_MODEL, version: str = "") -> np.ndarray:
    """Connect, embed, close: for one-off calls."""
    url = url or default_url(protocol)
    client = connect(protocol, url)
    try:
        result = client.infer(model, [text_input(client, texts)], model_version=version)
    except CALL_ERRORS as exc:
        raise _error(exc, url) from None
    finally:
        client.close()
    return _embeddings(result, model)


def cosine_similarity(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Pairwise cosine similarity of the rows of a (and b, default a): [len(a), len(b)]."""
    b = a if b is None else b
    a_unit = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b_unit = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a_unit @ b_unit.T
