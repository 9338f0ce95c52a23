"""Client helpers for the embedding service: connect over HTTP or gRPC (sync or asyncio), embed texts, compare.

Other commands (infer, serve's smoke request, load tests, benchmarks) reuse these instead of building
tritonclient requests themselves.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Sequence
from http.client import HTTPException

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from geventhttpclient.response import HTTPConnectionClosed
from tritonclient.utils import InferenceServerException

from tools import settings
from tools.errors import ServingError, UsageError
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
