"""A request whose connection closed before any answer is sent once more on a new connection (`client.call`): what
a client behind a Kubernetes Service needs when a pod it was talking to stops (Triton 2.51 keeps an open connection
until its exit timeout, then closes it). Real: tritonserver restarted on the same ports under a kept-alive client."""

from __future__ import annotations

import contextlib
import socket
import threading

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from tools.serving import client, runtime
from tools.serving.client import EmbeddingError
from tools.settings import Protocol

ARRAYS = {"X": np.array([[1.0, 2.0]], dtype=np.float32)}


def test_requests_on_connections_the_server_closed_are_sent_again(echo_repository):
    opts = runtime.ServerOptions.on_free_ports(repository=echo_repository)
    resent: dict[Protocol, list[Exception]] = {protocol: [] for protocol in Protocol}
    with runtime.running_server(opts) as first:
        connections = {Protocol.HTTP: client.connect(Protocol.HTTP, first.http_url),
                       Protocol.GRPC: client.connect(Protocol.GRPC, first.grpc_url)}
        for protocol, connection in connections.items():
            answer = client.call(connection, "echo", ARRAYS, on_resend=resent[protocol].append)
            assert answer["Y"].tolist() == [[1.0, 2.0]]
    try:
        with runtime.running_server(opts):  # the same ports: the clients' kept connections are the old server's
            for protocol, connection in connections.items():
                for _ in range(3):
                    answer = client.call(connection, "echo", ARRAYS, on_resend=resent[protocol].append)
                    assert answer["Y"].tolist() == [[1.0, 2.0]]
    finally:
        for connection in connections.values():
            connection.close()
    # A client may notice the closed connection before sending (then nothing is resent); at most one resend each.
    for errors in resent.values():
        assert len(errors) <= 1 and all(client.never_answered(exc) for exc in errors), errors


def test_a_server_that_closes_without_an_answer_gets_the_request_once_more_then_an_error():
    """A listener that reads each request and closes the connection: the moment a stopping server closes it."""
    accepted: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def close_after_reading() -> None:
            for _ in range(2):
                with contextlib.suppress(OSError):
                    peer, _ = listener.accept()
                    with peer:
                        accepted.append(peer.recv(65536))

        closer = threading.Thread(target=close_after_reading)
        closer.start()
        resent: list[Exception] = []
        connection = client.connect(Protocol.HTTP, f"127.0.0.1:{listener.getsockname()[1]}")
        try:
            with pytest.raises(EmbeddingError, match="closed the connection without an answer"):
                client.call(connection, "echo", ARRAYS, on_resend=resent.append)
        finally:
            connection.close()
            closer.join(10)
    assert len(resent) == 1 and len(accepted) == 2
    assert all(request.startswith(b"POST /v2/models/echo/infer") for request in accepted)


def test_a_request_to_no_server_fails_after_one_resend(echo_repository):
    opts = runtime.ServerOptions.on_free_ports(repository=echo_repository)
    resent: list[Exception] = []
    connection = client.connect(Protocol.HTTP, f"127.0.0.1:{opts.http_port}")
    with pytest.raises(EmbeddingError, match="cannot reach the server"):
        client.call(connection, "echo", ARRAYS, on_resend=resent.append)
    assert len(resent) == 1


@pytest.mark.parametrize(("error", "resend"), [
    (InferenceServerException("Socket closed", status="StatusCode.UNAVAILABLE"), True),
    (InferenceServerException("failed to connect to all addresses", status="StatusCode.UNAVAILABLE"), True),
    # Load shedding is an answer: the server refused, a resend would only add load.
    (InferenceServerException("Exceeds maximum queue size", status="StatusCode.UNAVAILABLE"), False),
    (InferenceServerException("Request timeout expired", status="StatusCode.UNAVAILABLE"), False),
    (InferenceServerException("unexpected inference input 'Z'", status="400"), False),
    (InferenceServerException("Stub process is not healthy", status="500"), False),
    (ConnectionRefusedError(111, "Connection refused"), True),
    (ConnectionResetError(104, "Connection reset by peer"), True),
    (TimeoutError("timed out"), False),  # it may have run: never sent twice
])
def test_only_what_never_reached_a_model_is_sent_again(error: Exception, resend: bool):
    assert client.never_answered(error) is resend
