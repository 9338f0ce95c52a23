"""`tools serve`: run the repository on a local tritonserver, deferring the models whose requirements are missing."""

from __future__ import annotations

import os
import signal
import tempfile
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
    from rich.progress import Progress, TaskID

    from tools.serving.healing import Heal, HealFailure
    from tools.serving.requirements import InstallProgress, Outcome, Pending, Plan
    from tools.serving.runtime import TritonServer


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
    exit_after_smoke: bool = typer.Option(False, help="Stop after the smoke request, once every deferred model is "
                                                      "loaded too (for scripts)."),
    heal: bool = typer.Option(True, help="Reload a model whose Python-backend stub process died (Triton does not)."),
    openai: bool = typer.Option(False, "--openai", help="Also serve an OpenAI-compatible API (as `tools gateway`)."),
    openai_port: int = typer.Option(settings.DEFAULT_GATEWAY_PORT, min=1, max=65535, help="Port of --openai's API."),
    install_requirements: bool = typer.Option(False, "--install-requirements",
                                              help="Only install every model's requirements.txt into the stubs' "
                                                   "interpreter (blocking, with progress), then exit."),
) -> None:
    """Start Triton on the repository locally, wait for readiness, send a smoke request, serve until Ctrl-C.

    A model whose requirements.txt pins packages the stubs' interpreter lacks is deferred: the other models start
    and answer first, its requirements install in the background (with progress), then it is loaded."""
    from tools.repository import load_repository
    from tools.serving import healing, requirements, runtime
    from tools.validation.run import refuse_errors

    if len({http_port, grpc_port, metrics_port}) < 3:
        raise UsageError(f"--http-port, --grpc-port and --metrics-port must differ (got {http_port}, {grpc_port}, "
                         f"{metrics_port})")
    interpreter = requirements.stub_interpreter()
    repo = load_repository(repository)
    plan = requirements.plan(repo, interpreter)
    entries = set(repo.entry_models())
    if install_requirements:
        if not repository.is_dir():
            raise UsageError(f"{repository} is not a directory (expected a Triton model repository)")
        for pending in plan.pending:
            _install(pending, interpreter)
        console.print(f"every model's requirements are installed in {interpreter}", highlight=False)
        return
    if target is Target.GPU:  # the host first: nothing else is worth reading when it cannot serve a GPU target
        runtime.require_gpu(runtime.find_tritonserver(tritonserver))
    refuse_errors(repository, console, "not starting tritonserver", target, plan.deferred)
    for pending in plan.pending:
        with_it = f" (and {', '.join(pending.ensembles)})" if pending.ensembles else ""
        console.print(f"[yellow]deferred[/] {pending.model}{with_it}: "
                      f"its requirements are not installed ({pending.summary()}); the other models start now and "
                      "it loads once they are", highlight=False, soft_wrap=True)
    opts = runtime.ServerOptions(repository=repository, host=host, http_port=http_port, grpc_port=grpc_port,
                                 metrics_port=metrics_port, tritonserver=tritonserver, control_key=control_key,
                                 models=plan.load_models, gpu=target is Target.GPU)
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
        for model in plan.now:
            if model in entries:
                _smoke(server, model)
        if openai:
            from tools.gateway import Gateway, GatewayOptions
            gateway = Gateway(GatewayOptions(server.grpc_url, host, openai_port, server.control_key,
                                             "--openai-port")).start()
            console.print(f"OpenAI-compatible API: {gateway.url}")
        if not exit_after_smoke:
            console.print("serving; Ctrl-C to stop" + ("" if heal else " (self-healing off)"))
            if heal:
                healer = healing.Healer(server, on_heal=_print_heal, on_failure=_print_heal_failure).start()
        if plan.deferred:
            outcomes = _load_deferred(server, plan, interpreter, started, entries)
            failed = [o.model for o in outcomes if o.error is not None]
            if exit_after_smoke and failed:
                raise ServingError(f"deferred model(s) not loaded: {', '.join(failed)} (reasons above)")
        if exit_after_smoke:
            return
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


def _smoke(server: TritonServer, model: str) -> None:
    """The one-request check of a model clients call, once it is ready: both protocols, printed."""
    from tools.serving import infer

    infer.smoke(server.http_url, server.grpc_url, Console(), [model])


def _install_log() -> Path:
    """pip's output of this run's installs: a file of its own, like the server's log."""
    fd, name = tempfile.mkstemp(prefix="requirements-", suffix=".log")
    os.close(fd)
    return Path(name)


def _progress_view() -> Progress:
    """A bar when the build reports its steps (ninja's [n/m], make's [ n%]), a pulse and pip's last line before; on a
    terminal only (a log gets the lines before and after)."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[steps]}"),
                    TimeElapsedColumn(), TextColumn("[dim]{task.fields[last]}", markup=True), console=console,
                    transient=True, disable=not console.is_terminal)


def _show(view: Progress, task: TaskID, pending: Pending, progress: InstallProgress) -> None:
    counted = progress.total is not None
    view.update(task, description=f"{pending.model}: {progress.stage}", total=progress.total,
                completed=progress.done or 0, steps=f"{progress.done}/{progress.total}" if counted else "",
                last="" if counted else escape(progress.last[:70]))


def _install(pending: Pending, interpreter: Path) -> None:
    """--install-requirements: one model's requirements, in the foreground; a failure is the command's."""
    from tools.serving import requirements

    log = _install_log()
    started = time.monotonic()
    console.print(f"{pending.model}: installing {pending.summary()} (log: {log})", highlight=False, soft_wrap=True)
    with _progress_view() as view:
        task = view.add_task(pending.model, total=None, steps="", last="")
        requirements.install(interpreter, pending.requirements, log,
                             lambda progress: _show(view, task, pending, progress))
    console.print(f"{pending.model}: installed {pending.summary()} in {time.monotonic() - started:.1f} s "
                  f"(log: {log})", highlight=False)


def _load_deferred(server: TritonServer, plan: Plan, interpreter: Path, started: float,
                   entries: set[str]) -> list[Outcome]:
    """Install the deferred models' requirements while the others serve, load them, say what became of each."""
    from tools.serving import requirements

    log = _install_log()
    console.print(f"installing the requirements of {', '.join(p.model for p in plan.pending)} in the background "
                  f"(log: {log})", highlight=False, soft_wrap=True)
    with _progress_view() as view:
        tasks = {p.model: view.add_task(p.model, total=None, steps="", last="") for p in plan.pending}

        def on_outcome(outcome: Outcome) -> None:
            if outcome.model in tasks:
                view.remove_task(tasks.pop(outcome.model))
            if outcome.error is not None:
                view.console.print(f"[red]not loaded[/] {outcome.model}: {escape(outcome.error)}; the other models "
                                   "keep serving", highlight=False, soft_wrap=True)
                return
            installed = "" if outcome.install_s is None else f"requirements installed in {outcome.install_s:.1f} s, "
            view.console.print(f"[green]ready[/] {outcome.model} {time.monotonic() - started:.1f} s after start "
                               f"({installed}loaded in {outcome.load_s:.1f} s)", highlight=False, soft_wrap=True)
            if outcome.model in entries:
                _smoke(server, outcome.model)

        return requirements.install_and_load(
            plan, interpreter, log, server.load_model,
            on_progress=lambda pending, progress: _show(view, tasks[pending.model], pending, progress),
            on_outcome=on_outcome)


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

