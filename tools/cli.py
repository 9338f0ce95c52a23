"""The `tools` command line: one small function per command; the logic lives in the library modules."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import typer
from rich.console import Console

from tools import client, infer, runtime, settings

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Serve, validate, load-test and deploy the Triton model repository.")
console = Console(stderr=True)


@app.callback()
def main() -> None:
    """Serve, validate, load-test and deploy the Triton model repository."""


def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@app.command()
def serve(
    repository: Path = typer.Argument(settings.MODEL_REPOSITORY, help="Model repository to serve."),
    host: str = typer.Option(settings.DEFAULT_HOST, help="Address to bind (all three endpoints)."),
    http_port: int = typer.Option(settings.DEFAULT_HTTP_PORT),
    grpc_port: int = typer.Option(settings.DEFAULT_GRPC_PORT),
    metrics_port: int = typer.Option(settings.DEFAULT_METRICS_PORT),
    tritonserver: Path | None = typer.Option(None, envvar=settings.TRITONSERVER_ENV,
                                             help="tritonserver binary (default: the pytriton wheel's)."),
    timeout: float = typer.Option(runtime.READY_TIMEOUT_S, help="Seconds to wait for every model to load."),
    exit_after_smoke: bool = typer.Option(False, help="Stop after the smoke request (for scripts)."),
) -> None:
    """Start Triton on the repository locally, wait for readiness, send a smoke request, serve until Ctrl-C."""
    opts = runtime.ServerOptions(repository=repository, host=host, http_port=http_port, grpc_port=grpc_port,
                                 metrics_port=metrics_port, tritonserver=tritonserver)
    server = runtime.TritonServer(opts)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        started = time.monotonic()
        with console.status("starting tritonserver and loading models..."):
            server.start(timeout)
        console.print(f"[green]ready[/] in {time.monotonic() - started:.1f} s — "
                      f"HTTP {server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}")
        console.print(f"log: {server.log_path}")
        infer.smoke(server.http_url, server.grpc_url, Console())
        if exit_after_smoke:
            return
        console.print("serving; Ctrl-C to stop")
        while server.process.poll() is None:
            time.sleep(0.5)
        raise fail(f"tritonserver exited with code {server.process.returncode}; log: {server.log_path}")
    except runtime.ServerStartError as exc:
        for model, message in exc.model_errors.items():
            console.print(f"  [red]{model}[/]: {message}", highlight=False)
        raise fail(str(exc)) from None
    except (runtime.RuntimeError_, client.EmbeddingError) as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        server.stop()


@app.command("infer")
def infer_command(
    texts: list[str] = typer.Argument(..., help="One or more texts to embed."),
    protocol: client.Protocol = typer.Option(client.Protocol.HTTP, help="Protocol to call the server with."),
    url: str | None = typer.Option(None, help="host:port of a running server (default: the local default port "
                                              "of the protocol)."),
    model: str = typer.Option(settings.EMBED_MODEL, help="Model to call."),
    version: str = typer.Option("", help="Model version (default: the server's choice)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (embeddings, similarity) to stdout."),
) -> None:
    """Embed texts on a running server; print the embeddings' shape and their cosine similarity matrix."""
    try:
        result = infer.run(texts, protocol, url, model, version)
    except client.EmbeddingError as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(result.as_json()))
    else:
        infer.render(result, Console())


if __name__ == "__main__":
    app()
