"""`tools loadtest`: Locust against a model, Triton's own view beside the client's, an SLO gate."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from tools import processes, settings
from tools.cli import options
from tools.cli.app import app, console, data_console
from tools.errors import UsageError
from tools.loadtest.corpus import Workload
from tools.loadtest.profiles import Shape


@app.command("loadtest")
def loadtest_command(
    ctx: typer.Context,
    model: str = options.model_option("Model or ensemble to load."),
    model_version: str = options.model_version_option(),
    url: str | None = options.url_option(),
    protocol: settings.Protocol | None = options.protocol_option(),
    metrics_url: str | None = typer.Option(None, envvar=settings.METRICS_URL_ENV, show_default=False,
                                           help="Triton's metrics URL (default: port "
                                                f"{settings.DEFAULT_METRICS_PORT} of the server's host when the server "
                                                "is on its default ports)."),
    users: int = typer.Option(16, help="Concurrent users (the peak, for step and spike shapes)."),
    spawn_rate: float = typer.Option(0.0, help="Users started per second (0: all at once)."),
    duration: str = typer.Option("60s", "--duration", "-t",
                                 help="Run length, as Locust's -t reads it: 20 (seconds), 20s, 3m, 2h, 1h30m."),
    shape: Shape = typer.Option(Shape.CONSTANT, case_sensitive=False,
                                help="How users come and go: constant, a step ramp, a mid-run spike, or an open-loop "
                                     "request rate (needs --rate)."),
    rate: float = typer.Option(0.0, help="Requests/s for the rate shape."),
    texts_per_request: int = typer.Option(1, help="Texts per request (client-side batch)."),
    workload: Workload | None = typer.Option(None, case_sensitive=False, show_default=False,
                                             help="Built-in corpus to send: passages (reviews, tickets, documents; "
                                                  "the default) or queries (search-style, 2-12 words)."),
    corpus: Path | None = typer.Option(None, help="Your own text file, one text per line, instead of a --workload "
                                                  "(default: the built-in corpus).", show_default=False),
    text_input: str | None = options.text_input_option(),
    params: list[str] = options.param_option(),
    shapes: list[str] = options.shape_option(),
    input_data: Path | None = options.input_data_option(),
    serve: bool = typer.Option(False, help="Start a local server on free loopback ports for the run."),
    repository: Path = options.repository_option("Repository to serve with --serve (default: ./model_repository)."),
    slo: str | None = typer.Option(None, help="Fail (exit 1) if broken, e.g. p99=50ms,errors=0.1%,refused=5%,rps=100 "
                                             "(latencies and rps: accepted requests; rates: of all requests); a "
                                             "streaming model also takes ttft_p99=500ms, itl_p99=50ms, "
                                             "output_tokens_per_s>=100 (ttft_/itl_ with avg, p50, p90, p95, p99, "
                                             "max)."),
    out: Path = typer.Option(Path("results/loadtest"), help="Folder for summary.json/.csv, timeline.png, raw files."),
    web: bool = typer.Option(False, help="Open Locust's web UI on 127.0.0.1 instead of a headless run."),
    web_port: int = typer.Option(settings.LOCUST_WEB_PORT, min=1, max=65535, help="Port of the web UI."),
) -> None:
    """Load-test any model with Locust; print client and Triton views; write JSON, CSV and a plot; gate on an SLO.

    Requests follow the model's configuration: corpus texts for its text input, generated data of the declared dtype
    and shape (or --input-data) for its other required inputs. A decoupled model is streamed, and the report adds
    GenAI-Perf's figures: time to first token, inter-token latency, output tokens per second, requests per second.

    Every request is accepted, refused (the server shed load: HTTP 503/429, gRPC RESOURCE_EXHAUSTED, or UNAVAILABLE
    worded by Triton's queue policy) or failed with an error; refusals are counted apart from errors, and latencies
    are those of accepted requests. Exit 1 when no request is accepted, an --slo term breaks, any request fails with
    an error (unless --slo errors=... allows some), or the server refuses requests under a shape other than spike
    (unless --slo refused=... allows some): in a spike, refusals are expected.
    """
    from tools.loadtest import corpus as corpus_texts
    from tools.loadtest import report, runner
    from tools.serving import client, payloads

    # Only a --url typed with --serve contradicts it; $TRITON_URL may stay exported. (By name: Typer vendors click.)
    if serve and getattr(ctx.get_parameter_source("url"), "name", None) == "COMMANDLINE":
        raise UsageError("--serve starts its own server: drop --url, or drop --serve to test the server at --url")
    if web and slo:
        raise UsageError("--slo judges a headless run: the web UI has no end to judge (drop one of them)")
    protocol, address = client.resolve(url, protocol)
    config = runner.LoadTestConfig(
        url=address, protocol=protocol, model=model, model_version=model_version, users=users,
        spawn_rate=spawn_rate, duration_s=runner.parse_duration(duration), shape=shape, request_rate=rate,
        texts_per_request=texts_per_request, corpus=corpus_texts.resolve(workload, corpus),
        metrics_url=metrics_url or runner.default_metrics_url(address, protocol), text_input=text_input,
        params=payloads.parse_params(params), shapes=payloads.parse_shapes(shapes), input_data=input_data)
    targets = runner.parse_slo(slo) if slo else []
    config.check()
    if web:
        processes.require_free_port(settings.DEFAULT_HOST, web_port, "--web-port")
    with runner.local_server(config, repository) if serve else contextlib.nullcontext(config) as config:
        if web:
            console.print(f"Locust web UI: http://{settings.DEFAULT_HOST}:{web_port} (Ctrl-C to stop)")
            return runner.run_web(config, web_port)
        runner.check_target(config)
        with console.status(f"load-testing {config.model} over {config.protocol}...") as status:
            result = runner.run(config, out, targets,
                                on_progress=lambda p: status.update(p.describe(config.duration_s)))
    files = report.write(result, out)
    report.render(result, data_console())
    console.print("wrote " + ", ".join(str(path) for path in files.values()))
    result.verdict()
