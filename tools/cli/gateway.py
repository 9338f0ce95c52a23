"""`tools gateway`: an OpenAI-compatible API over a running Triton's gRPC endpoint."""

from __future__ import annotations

import signal
import time

import typer

from tools import settings
from tools.cli import options
from tools.cli.app import app, console
from tools.cli.serving import _interrupt
from tools.errors import ServingError


@app.command()
def gateway(
    url: str | None = options.url_option(),
    host: str = typer.Option(settings.DEFAULT_HOST, help="Address to listen on."),
    port: int = typer.Option(settings.DEFAULT_GATEWAY_PORT, min=1, max=65535, help="Port to listen on."),
    control_key: str | None = options.control_key_option(
        "Secret of the server's model-control API: its model list needs it (default: the key `tools serve` left "
        "for you)."),
) -> None:
    """Serve OpenAI's /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models over Triton's gRPC
    endpoint (the server's ready generation and embedding models) until Ctrl-C."""
    from tools.gateway import Gateway, GatewayOptions
    from tools.serving import client, runtime

    _, address = client.resolve(url, settings.Protocol.GRPC)
    running = Gateway(GatewayOptions(address, host, port, runtime.saved_control_key(control_key))).start()
    signal.signal(signal.SIGTERM, _interrupt)
    console.print(f"OpenAI-compatible API at {running.url} over Triton gRPC {address}; Ctrl-C to stop")
    try:
        while running.running():
            time.sleep(0.5)
        raise ServingError("the gateway stopped on its own (see the messages above)")
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        running.stop()
