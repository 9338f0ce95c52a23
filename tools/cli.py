"""The `tools` command line: one small function per command; the logic lives in the library modules."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time
from pathlib import Path

import typer
from rich.console import Console

from tools import runtime, settings
from tools.validation import Target
from tools.validation.run import OutputFormat, check_before_serving, run_validation

# Commands import their heavier modules (tritonclient, pyhelm3, Locust glue, ONNX Runtime) when they run, so that
# `tools validate` in CI and `tools --help` start fast.

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Serve, validate, load-test and deploy the Triton model repository.")
console = Console(stderr=True)


@app.callback()
def main() -> None:
    """Serve, validate, load-test and deploy the Triton model repository."""


def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops `serve` the way Ctrl-C does: through the same clean shutdown."""
    raise KeyboardInterrupt


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
    if not check_before_serving(repository, console):
        raise fail(f"{repository} has configuration errors (listed above); not starting tritonserver")
    opts = runtime.ServerOptions(repository=repository, host=host, http_port=http_port, grpc_port=grpc_port,
                                 metrics_port=metrics_port, tritonserver=tritonserver)
    server = runtime.TritonServer(opts)
    from tools import client, infer

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        started = time.monotonic()
        with console.status("starting tritonserver and loading models..."):
            server.start(timeout)
        console.print(f"[green]ready[/] in {time.monotonic() - started:.1f} s — "
                      f"HTTP {server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}")
        console.print(f"log: {server.log_path}")
        key_source = f"${settings.CONTROL_KEY_ENV}" if os.environ.get(settings.CONTROL_KEY_ENV) \
            else server.write_control_key()
        console.print(f"model-control API: send header {settings.CONTROL_KEY_HEADER} with the key in {key_source}")
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
    protocol: settings.Protocol = typer.Option(settings.Protocol.HTTP, help="Protocol to call the server with."),
    url: str | None = typer.Option(None, help="host:port of a running server (default: the local default port "
                                              "of the protocol)."),
    model: str = typer.Option(settings.EMBED_MODEL, help="Model to call."),
    version: str = typer.Option("", help="Model version (default: the server's choice)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (embeddings, similarity) to stdout."),
) -> None:
    """Embed texts on a running server; print the embeddings' shape and their cosine similarity matrix."""
    from tools import client, infer

    try:
        result = infer.run(texts, protocol, url, model, version)
    except client.EmbeddingError as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(result.as_json()))
    else:
        infer.render(result, Console())


@app.command("loadtest")
def loadtest_command(
    model: str = typer.Option(settings.EMBED_MODEL, help="Model or ensemble to load."),
    model_version: str = typer.Option("", help="Model version (default: the server's choice)."),
    protocol: settings.Protocol = typer.Option(settings.Protocol.GRPC, help="Protocol to load the server over."),
    users: int = typer.Option(16, help="Concurrent users (the peak, for step and spike shapes)."),
    spawn_rate: float = typer.Option(0.0, help="Users started per second (0: all at once)."),
    duration: str = typer.Option("60s", help="Run length, e.g. 30s, 2m."),
    shape: str = typer.Option("constant", help="constant, step, spike or rate (open loop, needs --rate)."),
    rate: float = typer.Option(0.0, help="Requests/s for the rate shape."),
    texts_per_request: int = typer.Option(1, help="Texts per request (client-side batch)."),
    corpus: Path = typer.Option(settings.LOADTESTS_DIR / "corpus.txt", help="Text file, one text per line."),
    url: str | None = typer.Option(None, help="host:port of a running server (default: local default port)."),
    metrics_url: str | None = typer.Option(None, help="Triton's metrics URL (default: the local default)."),
    serve: bool = typer.Option(False, help="Start a local server on free loopback ports for the run."),
    repository: Path = typer.Option(settings.MODEL_REPOSITORY, help="Repository to serve with --serve."),
    slo: str | None = typer.Option(None, help="Fail (exit 1) if broken, e.g. p99=50ms,errors=0.1%,rps=100."),
    out: Path = typer.Option(Path("results/loadtest"), help="Folder for summary.json/.csv, timeline.png, raw files."),
    web: bool = typer.Option(False, help="Open Locust's web UI on 127.0.0.1 instead of a headless run."),
    web_port: int = typer.Option(8089, help="Port of the web UI."),
) -> None:
    """Load-test a model with Locust; print client and Triton views; write JSON, CSV and a plot; gate on an SLO."""
    from tools import loadtest

    try:
        default_url, default_metrics = loadtest.default_urls(protocol)
        config = loadtest.LoadTestConfig(
            url=url or default_url, protocol=protocol, model=model, model_version=model_version, users=users,
            spawn_rate=spawn_rate, duration_s=loadtest.parse_duration(duration), shape=shape, request_rate=rate,
            texts_per_request=texts_per_request, corpus=corpus, metrics_url=metrics_url or default_metrics)
        targets = loadtest.parse_slo(slo) if slo else []
        config.check()
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    try:
        with loadtest.local_server(config, repository) if serve else contextlib.nullcontext(config) as config:
            if web:
                console.print(f"Locust web UI: http://{settings.DEFAULT_HOST}:{web_port} (Ctrl-C to stop)")
                return loadtest.run_web(config, web_port)
            loadtest.check_target(config)
            with console.status(f"load-testing {config.model} over {config.protocol}...") as status:
                result = loadtest.run(config, out, targets,
                                      on_progress=lambda p: status.update(p.describe(config.duration_s)))
    except (loadtest.LoadTestError, runtime.RuntimeError_) as exc:
        raise fail(str(exc)) from None
    loadtest.render(result, Console())
    console.print("wrote " + ", ".join(str(path) for path in result.files.values()))
    if result.slo_broken:
        raise fail("the run broke the SLO")


@app.command()
def validate(
    repository: Path = typer.Argument(settings.MODEL_REPOSITORY, help="Model repository to check."),
    output_format: OutputFormat = typer.Option(OutputFormat.HUMAN, "--format", help="Report format."),
    strict: bool = typer.Option(False, help="Exit 1 on warnings too."),
    target: Target = typer.Option(Target.CPU, help="Hardware the repository will be served on."),
    server: bool = typer.Option(False, help="Also load every model in a real tritonserver and report refusals."),
) -> None:
    """Check a model repository offline (exit 0 clean, 1 findings, 2 usage error)."""
    raise typer.Exit(run_validation(repository, output_format, strict, target, server))


@app.command()
def deploy(
    revision: int | None = typer.Argument(None, help="With --rollback: the revision to return to (default: previous)."),
    release: str = typer.Option(settings.DEFAULT_RELEASE, help="Helm release name."),
    namespace: str = typer.Option(settings.DEFAULT_NAMESPACE, "--namespace", "-n"),
    values: list[Path] = typer.Option([], "--values", "-f", help="Values file (repeatable)."),
    set_values: list[str] = typer.Option([], "--set", help="key.path=value (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Render against the cluster, change nothing."),
    diff: bool = typer.Option(False, "--diff", help="Show what an upgrade would change, change nothing."),
    rollback: bool = typer.Option(False, "--rollback", help="Roll back to REVISION (default: the previous one)."),
    history: bool = typer.Option(False, "--history", help="List the release's revisions."),
    status: bool = typer.Option(False, "--status", help="Show the current revision."),
    uninstall: bool = typer.Option(False, "--uninstall", help="Remove the release."),
    repository: Path = typer.Option(settings.MODEL_REPOSITORY, help="Model repository to validate and deploy."),
    helm: Path | None = typer.Option(None, envvar=settings.HELM_ENV, help="helm binary (default: PATH, then cache)."),
    kubeconfig: Path | None = typer.Option(None, envvar="KUBECONFIG"),
    context: str | None = typer.Option(None, "--kube-context"),
    timeout: str = typer.Option(settings.DEFAULT_DEPLOY_TIMEOUT, help="How long helm waits for pods (e.g. 5m)."),
) -> None:
    """Validate the repository, then install or upgrade the chart (atomic: a failed rollout rolls back)."""
    from tools import deploy as deployment

    actions = [name for name, on in (("--dry-run", dry_run), ("--diff", diff), ("--rollback", rollback),
                                     ("--history", history), ("--status", status), ("--uninstall", uninstall)) if on]
    if len(actions) > 1:
        raise fail(f"choose one of {', '.join(actions)}")
    if revision is not None and not rollback:
        raise fail("a REVISION argument only goes with --rollback")
    target = deployment.Target(release=release, namespace=namespace, helm=helm, kubeconfig=kubeconfig,
                               kube_context=context, timeout=timeout)
    where = f"release {release} in namespace {namespace}"
    try:
        if history:
            for row in deployment.history(target):
                print(f"{row.revision:>4}  {row.status:<16} {row.updated}  {row.description}")
        elif status:
            current = deployment.current_revision(target)
            print(f"{where}: revision {current.revision} {current.status.value} (updated {current.updated})")
        elif uninstall:
            with console.status(f"uninstalling {where}..."):
                deployment.uninstall(target)
            console.print(f"uninstalled {where}")
        elif rollback:
            with console.status(f"rolling back {where}; waiting up to {timeout} for pods to be ready..."):
                done = deployment.rollback(target, revision)
            console.print(f"[green]rolled back[/] {where}: now revision {done.revision} ({done.status.value})")
        else:
            user_values = deployment.load_values(values, set_values)
            deployment.check_repository(repository)
            planned = deployment.values_for(repository, user_values)
            if diff:
                print(deployment.diff(target, planned) or "no changes", end="")
                return
            verb = "rendering" if dry_run else "installing/upgrading"
            with console.status(f"{verb} {where}; waiting up to {timeout} for pods to be ready..."):
                done = deployment.install_or_upgrade(target, planned, dry_run=dry_run)
            console.print(f"[green]{'dry run ok' if dry_run else 'deployed'}[/] {where}: revision {done.revision} "
                          f"({done.status.value})")
    except deployment.DeployError as exc:
        raise fail(str(exc)) from None


@app.command("bench")
def bench_command(
    quick: bool = typer.Option(False, help="One short point per case (a smoke run for CI)."),
    case: list[str] = typer.Option([], help="Case to run (repeatable; default: all four)."),
    server_threads: int = typer.Option(1, help="ONNX Runtime intra-op threads of the FastAPI and PyTriton "
                                                 "services (1 measured best under load here)."),
    out: Path = typer.Option(Path("results/bench"), help="Folder for bench.json, bench.md and bench.png."),
) -> None:
    """Benchmark the pipeline in-process, on Triton, as a FastAPI service and on PyTriton, side by side."""
    from tools import benchmark, client

    case = case or list(benchmark.CASE_TITLES)
    unknown = set(case) - set(benchmark.CASE_TITLES)
    if unknown:
        raise fail(f"unknown case(s) {', '.join(sorted(unknown))}: choose from {', '.join(benchmark.CASE_TITLES)}", 2)
    if server_threads < 1:
        raise fail("--server-threads must be at least 1", 2)
    config = benchmark.BenchConfig.quick() if quick else benchmark.BenchConfig()
    config = dataclasses.replace(config, server_threads=server_threads)
    try:
        with console.status("benchmarking...") as status:
            result = benchmark.run(config, out, tuple(case), progress=status.update)
    except (benchmark.BenchmarkError, runtime.RuntimeError_, client.EmbeddingError) as exc:
        raise fail(str(exc)) from None
    benchmark.render(result, Console())
    console.print("wrote " + ", ".join(str(path) for path in result.files.values()))


@app.command("dashboards")
def dashboards_command(
    check: bool = typer.Option(False, help="Write nothing; exit 1 if the chart's copies are stale (for CI)."),
) -> None:
    """Regenerate the Grafana dashboards and Prometheus rules in the Helm chart from dashboards/."""
    from dashboards import generate as monitoring_outputs

    outputs = monitoring_outputs.rendered_outputs()
    if check:
        stale = monitoring_outputs.stale_outputs(outputs)
        if stale:
            raise fail("stale (run `tools dashboards`): " + ", ".join(map(str, stale)))
        console.print("dashboards and rules are up to date")
        return
    written = monitoring_outputs.write_outputs(outputs)
    console.print("wrote " + ", ".join(map(str, written)) if written else "dashboards and rules are up to date")


if __name__ == "__main__":
    app()
