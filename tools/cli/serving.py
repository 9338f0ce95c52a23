"""`tools serve` and `tools infer`: run the repository on a local tritonserver, call a running one."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

from tools import settings
from tools.cli import options
from tools.cli.app import app, console
from tools.errors import ServingError, UsageError
from tools.validation import Target

if TYPE_CHECKING:
    from tools.serving.healing import Heal, HealFailure


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops `serve` the way Ctrl-C does: through the same clean shutdown."""
    raise KeyboardInterrupt


@app.command()
def serve(
    repository: Path = options.repository_argument("Model repository to serve (default: ./model_repository)."),
    host: str = typer.Option(settings.DEFAULT_HOST, help="Address to bind (all three endpoints)."),
    http_port: int = typer.Option(settings.DEFAULT_HTTP_PORT, min=1, max=65535, help="HTTP/REST (KServe v2) port."),
    grpc_port: int = typer.Option(settings.DEFAULT_GRPC_PORT, min=1, max=65535, help="gRPC port."),
    metrics_port: int = typer.Option(settings.DEFAULT_METRICS_PORT, min=1, max=65535,
                                     help="Prometheus metrics port."),
    tritonserver: Path | None = typer.Option(None, envvar=settings.TRITONSERVER_ENV, show_default=False,
                                             help="tritonserver binary (default: the nvidia-pytriton wheel's)."),
    target: Target = typer.Option(Target.CPU, help="Hardware to serve on: the repository is validated for it; gpu "
                                                   "also needs a CUDA build of tritonserver and an NVIDIA GPU here "
                                                   "(checked first) and turns on Triton's GPU metrics."),
    control_key: str | None = typer.Option(None, envvar=settings.CONTROL_KEY_ENV, show_default=False,
                                           help=f"Secret of the model-control API (header "
                                                f"{settings.CONTROL_KEY_HEADER}); default: a new one per run, "
                                                "left in a file only you can read."),
    timeout: float = typer.Option(settings.SERVER_READY_TIMEOUT_S, min=1,
                                  help="Seconds to wait for every model to load."),
    exit_after_smoke: bool = typer.Option(False, help="Stop after the smoke request (for scripts)."),
    heal: bool = typer.Option(True, help="Reload a model whose Python-backend stub process died (Triton does not)."),
    openai: bool = typer.Option(False, "--openai", help="Also serve an OpenAI-compatible API (as `tools gateway`)."),
    openai_port: int = typer.Option(settings.DEFAULT_GATEWAY_PORT, min=1, max=65535, help="Port of --openai's API."),
) -> None:
    """Start Triton on the repository locally, wait for readiness, send a smoke request, serve until Ctrl-C."""
    from tools.serving import healing, infer, runtime
    from tools.validation.run import refuse_errors

    if len({http_port, grpc_port, metrics_port}) < 3:
        raise UsageError(f"--http-port, --grpc-port and --metrics-port must differ (got {http_port}, {grpc_port}, "
                         f"{metrics_port})")
    if target is Target.GPU:  # the host first: nothing else is worth reading when it cannot serve a GPU target
        runtime.require_gpu(runtime.find_tritonserver(tritonserver))
    refuse_errors(repository, console, "not starting tritonserver", target)
    opts = runtime.ServerOptions(repository=repository, host=host, http_port=http_port, grpc_port=grpc_port,
                                 metrics_port=metrics_port, tritonserver=tritonserver, control_key=control_key,
                                 gpu=target is Target.GPU)
    server = runtime.TritonServer(opts)
    healer = gateway = None
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        started = time.monotonic()
        with console.status("starting tritonserver and loading models..."):
            server.start(timeout)
        console.print(f"[green]ready[/] in {time.monotonic() - started:.1f} s — "
                      f"HTTP {server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}")
        console.print(f"log: {server.log_path}")
        key_source = f"the key of --control-key / ${settings.CONTROL_KEY_ENV}" if control_key \
            else f"the key in {server.write_control_key()}"
        console.print(f"model-control API: send header {settings.CONTROL_KEY_HEADER} with {key_source}")
        infer.smoke(server.http_url, server.grpc_url, Console())
        if openai:
            from tools.gateway import Gateway, GatewayOptions
            gateway = Gateway(GatewayOptions(server.grpc_url, host, openai_port, server.control_key,
                                             "--openai-port")).start()
            console.print(f"OpenAI-compatible API: {gateway.url}")
        if exit_after_smoke:
            return
        console.print("serving; Ctrl-C to stop" + ("" if heal else " (self-healing off)"))
        if heal:
            healer = healing.Healer(server, on_heal=_print_heal, on_failure=_print_heal_failure).start()
        while server.child.running():
            time.sleep(0.5)
        raise ServingError(f"tritonserver exited with code {server.child.returncode}; log: {server.log_path}")
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        if healer is not None:
            healer.stop()
        if gateway is not None:
            gateway.stop()
        server.stop()


def _print_heal(heal: Heal) -> None:
    finding = heal.finding
    console.print(f"[yellow]healed[/] {finding.model} version {finding.version}: {finding.reason}; "
                  f"reloaded in {heal.reload_s:.1f} s", highlight=False)


def _print_heal_failure(failure: HealFailure) -> None:
    finding = failure.finding
    console.print(f"[red]healing {finding.model} version {finding.version} failed[/] (attempt {failure.attempt}, "
                  f"{finding.reason}): {escape(failure.error)}", highlight=False)
    if failure.gave_up:
        console.print(f"[red]gave up healing {finding.model} version {finding.version}[/]: its requests may keep "
                      "failing; restart the server (see its log)", highlight=False)

